"""uvicorn serving the HTTP app on the job server's event loop (the one grpc.aio runs on)."""

from __future__ import annotations

import asyncio
import socket
from typing import Optional

import uvicorn

__all__ = ["HttpServer"]


class HttpServer:
    """Binds host:port now (port 0 picks one: `port`), serves once `start` runs on the loop."""

    def __init__(self, app, host: str, port: int, *, tls_cert: Optional[str] = None, tls_key: Optional[str] = None):
        self._socket = socket.create_server((host, port), reuse_port=False)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()

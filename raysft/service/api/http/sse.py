"""A job's events as Server-Sent Events: `id: <sequence>`, `event: <type>`, `data: <JobEvent JSON>`.

Each stream holds a slot (StreamSlots: per client address and in all), sends a comment every 15 s so idle
proxies and dead clients are noticed, and ends after `max_stream_s` or the job's terminal event with an
`end` event; EventSource clients reconnect with Last-Event-ID and lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from typing import AsyncIterator, Callable

from raysft.service.jobs.auth import Principal
from raysft.service.operations import Jobs
from raysft.service.jobs.store import EventRecord
from raysft.service.api.streams import StreamSlots

__all__ = ["event_stream"]

_KEEPALIVE_S = 15.0


def event_stream(jobs: Jobs, who: Principal, job_id: str, after: int, slots: StreamSlots, client: str, max_stream_s: float,
                 to_json: Callable[[EventRecord], dict]) -> AsyncIterator[str]:
    """The SSE text of a job's events after `after`. Takes the client's slot now (ResourceExhausted when none is
    free), so a refusal is a 429, not a broken stream; the slot is given back when the stream ends or, if it
    never starts (the client left first), when it is dropped."""
    slot = slots.hold(client)
    slot.__enter__()
    release = _once(lambda: slot.__exit__(None, None, None))
    stream = _events(jobs.watch(job_id, after, who=who), max_stream_s, to_json, release)
    weakref.finalize(stream, release)
    return stream


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = []

    def call() -> None:
        if not done:
            done.append(True)
            fn()

    return call


async def _events(source: AsyncIterator[EventRecord], max_stream_s: float, to_json, release) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_stream_s
    pending = None
    try:
        yield ": raysft events\n\n"
        while True:
            left = deadline - loop.time()
            if left <= 0:
                yield _end("max_stream_s")
                return
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=min(left, _KEEPALIVE_S))
            if not done:
                yield ": keep-alive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                yield _end("terminal")
                return
            finally:
                if pending.done():
                    pending = None
            yield f"id: {event.sequence}\nevent: {event.type}\ndata: {json.dumps(to_json(event))}\n\n"
    finally:
        if pending is not None and not pending.done():  # the source must stop before it is closed
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        await source.aclose()
        release()


def _end(reason: str) -> str:
    return f"event: end\ndata: {json.dumps({'reason': reason})}\n\n"

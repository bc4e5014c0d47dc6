"""The HTTP/JSON API, the web console and `/metrics`, served by the job server next to gRPC (`--http-port`)."""

from raysft.service.api.http.app import create_app
from raysft.service.api.http.serving import HttpServer

__all__ = ["create_app", "HttpServer"]

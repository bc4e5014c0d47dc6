"""Server interceptors: bearer-token authentication (which hands each handler its caller: `caller()`), and one
place that maps errors to status codes.

Authentication covers every RPC, streams included, except standard health checking (load balancers
probe it without credentials). The error interceptor turns raysft.service.jobs.errors exceptions into their
status codes, INVALID_ARGUMENT with a google.rpc.BadRequest listing each field violation (its `field`
is the dotted spec path); anything unexpected becomes INTERNAL with an id to find it in the server log,
so nothing a client sends takes the server down. Both are grpc.aio interceptors: behaviours are coroutines, async
generators, or (health checking's Watch) coroutines that write their responses to the context.
"""

from __future__ import annotations

import abc
import contextvars
import inspect
import logging
import secrets
from typing import Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from raysft.service.jobs.auth import Authenticator, Principal
from raysft.service.jobs.errors import InvalidArgument, ServiceError, Unauthenticated
from raysft.service.jobs.states import IllegalTransition

__all__ = ["AuthInterceptor", "ErrorInterceptor", "OPEN_METHOD_PREFIXES", "WrappingInterceptor", "rebuild_handler",
           "caller"]

log = logging.getLogger(__name__)

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("raysft_caller")

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
_MAX_MESSAGE = 2000  # characters of an error's message; grpc clients refuse trailers over 8 kB by default

_KINDS = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def rebuild_handler(handler: grpc.RpcMethodHandler, wrap: Callable[[Callable, bool], Callable]) -> grpc.RpcMethodHandler:
    """The same kind of handler with its behaviour replaced by wrap(behaviour, streams_responses)."""
    attr, build = _KINDS[(handler.request_streaming, handler.response_streaming)]
    return build(wrap(getattr(handler, attr), handler.response_streaming),
                 request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Replaces each method's behaviour with `self.wrap(behaviour, method, streams)`: the wrapped handler is built
    once per method, not once per call, and again only when the registered handler changes."""

    def __init__(self):
        # method -> (the registered handler, its wrapped copy)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    @abc.abstractmethod
    def wrap(self, behaviour: Callable, method: str, streams: bool) -> Callable:
        """The behaviour to run in place of `behaviour` for `method` (`streams`: it yields responses)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, rebuild_handler(
                handler, lambda behaviour, streams: self.wrap(behaviour, method, streams)))
        return cached[1]


class AuthInterceptor(WrappingInterceptor):
    """Requires `authorization: Bearer <token>` metadata on every RPC but health checks (the decision is
    `Authenticator.authenticate`, shared with the HTTP API) and hands the caller to the handler: `caller()`.

    The check runs in the wrapped behaviour, inside the call's own task, so the principal it sets there is the
    one the handler reads (each RPC's task has its own copy of the context variables).
    """

    def __init__(self, authenticator: Authenticator):
        super().__init__()
        self._auth = authenticator

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(handler_call_details)
        handler = await super().intercept_service(continuation, handler_call_details)
        if handler is None:  # an unknown method: saying UNIMPLEMENTED would tell a stranger which methods exist
            try:
                self._auth.authenticate(_authorization(handler_call_details.invocation_metadata))
            except Unauthenticated as exc:
                return grpc.unary_unary_rpc_method_handler(_refuse(str(exc), False))
        return handler

    def wrap(self, behaviour: Callable, method: str, streams: bool) -> Callable:
        auth = self._auth

        async def authenticated(context) -> None:
            try:
                _CALLER.set(auth.authenticate(_authorization(context.invocation_metadata())))
            except Unauthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

        async def call(request, context):
            await authenticated(context)
            return await behaviour(request, context)

        async def call_stream(request, context):
            await authenticated(context)
            async for response in behaviour(request, context):
                yield response

        return call_stream if streams and inspect.isasyncgenfunction(behaviour) else call


def caller() -> Principal:
    """The principal of the RPC being handled (set by AuthInterceptor; a call it did not see has none)."""
    return _CALLER.get()


def _authorization(metadata) -> str:
    return dict(metadata or ()).get("authorization", "")


def _refuse(reason: str, streams: bool) -> Callable:
    async def refuse(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def refuse_stream(_request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # an async generator, as the stream's handler must be

    return refuse_stream if streams else refuse


class ErrorInterceptor(WrappingInterceptor):
    """Maps exceptions raised by handlers to gRPC statuses."""

    def wrap(self, behaviour: Callable, method: str, streams: bool) -> Callable:
        return _guard_stream(behaviour, method) if streams else _guard(behaviour, method)


def _guard(behaviour: Callable, method: str) -> Callable:
    async def call(request, context):
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise  # the handler aborted the call itself: its status stands
        except Exception as exc:
            await _abort(context, exc, method)

    return call


def _guard_stream(behaviour: Callable, method: str) -> Callable:
    if not inspect.isasyncgenfunction(behaviour):
        return _guard(behaviour, method)  # a coroutine that writes its responses to the context

    async def call(request, context):
        try:
            async for response in behaviour(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return call


async def _abort(context, exc: Exception, method: str) -> None:
    if isinstance(exc, IllegalTransition):
        code, message, details = "FAILED_PRECONDITION", str(exc), []
    elif isinstance(exc, ServiceError):
        code, message, details = exc.code, str(exc), []
        if isinstance(exc, InvalidArgument):
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.message) for v in exc.violations])
            packed = any_pb2.Any()
            packed.Pack(bad)
            details = [packed]
    else:
        ref = secrets.token_hex(4)
        log.exception("internal error %s in %s", ref, method)
        code, message, details = "INTERNAL", f"internal error (reference {ref} in the server log)", []
    if len(message) > _MAX_MESSAGE:  # a message quoting a client's value (a megabyte job id) must fit the trailer
        message = message[:_MAX_MESSAGE - 3] + "..."
    status = status_pb2.Status(code=code_pb2.Code.Value(code), message=message, details=details)
    await context.abort_with_status(rpc_status.to_status(status))

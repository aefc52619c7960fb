"""Per-client limits of every server: concurrent RPCs and streams per peer, and the prediction window.

A client over its limit gets RESOURCE_EXHAUSTED naming the limit and the variable that sets it,
at once, instead of piling work on the server (or being CANCELLED without a word when the server
gives up). A peer is what gRPC calls one: an address and port, i.e. one client connection (all
local processes share 127.0.0.1, so a limit per IP would make them starve one another).

| variable | default | what |
|---|---|---|
| SKYHAUL_MAX_CONCURRENT_RPCS | 512 | RPCs in flight per peer (streams and uploads included) |
| SKYHAUL_MAX_CONCURRENT_STREAMS | 32 | response streams in flight per peer (WatchEvents, StreamPositions, PredictRoutes, GetBlob, GetObject: the long-lived ones) |
| SKYHAUL_MAX_PREDICTION_WINDOW_S | 604800 (7 days) | window of one PredictRoutes call |

0 turns a limit off. Health and reflection are never limited (probes must always answer).
"""

from __future__ import annotations

import collections
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from skyhaul.runtime import errors
from skyhaul.runtime.auth import OPEN_SERVICES

MAX_RPCS_ENV = "SKYHAUL_MAX_CONCURRENT_RPCS"
MAX_STREAMS_ENV = "SKYHAUL_MAX_CONCURRENT_STREAMS"
MAX_PREDICTION_WINDOW_ENV = "SKYHAUL_MAX_PREDICTION_WINDOW_S"

DEFAULT_MAX_RPCS = 512  # well above the mdc's block uploads and a busy client's concurrent puts
DEFAULT_MAX_STREAMS = 32
DEFAULT_MAX_PREDICTION_WINDOW_S = 7 * 86400.0


class LimitExceeded(errors.SkyhaulError):
    """A per-client limit was hit; maps to RESOURCE_EXHAUSTED. The message names the limit."""


class LimitConfigError(ValueError):
    """A SKYHAUL_MAX_* variable is not a number >= 0."""


@dataclass(frozen=True)
class Limits:
    max_rpcs: int = DEFAULT_MAX_RPCS
    max_streams: int = DEFAULT_MAX_STREAMS
    max_prediction_window_s: float = DEFAULT_MAX_PREDICTION_WINDOW_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        return cls(
            max_rpcs=int(_number(env, MAX_RPCS_ENV, DEFAULT_MAX_RPCS, integer=True)),
            max_streams=int(_number(env, MAX_STREAMS_ENV, DEFAULT_MAX_STREAMS, integer=True)),
            max_prediction_window_s=_number(env, MAX_PREDICTION_WINDOW_ENV, DEFAULT_MAX_PREDICTION_WINDOW_S),
        )


def _number(env: Mapping[str, str], var: str, default: float, integer: bool = False) -> float:
    text = env.get(var, "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise LimitConfigError(f"{var}: {text[:40]!r} is not a {'whole ' if integer else ''}number") from None
    if not value >= 0 or value == float("inf"):
        raise LimitConfigError(f"{var}: {text[:40]!r} must be a finite number >= 0 (0 = no limit)")
    return value


def check_prediction_window(window_s: float, env: Mapping[str, str] = os.environ) -> None:
    """Raise LimitExceeded when one prediction call asks for more than the configured window."""
    cap = Limits.from_env(env).max_prediction_window_s
    if cap and window_s > cap:
        raise LimitExceeded(
            f"prediction window of {window_s / 86400:.2f} days is over the limit of {cap / 86400:.2f} days "
            f"per call ({MAX_PREDICTION_WINDOW_ENV}={cap:g}): split it into shorter windows"
        )


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Counts RPCs and streams in flight per peer; over a limit the call ends RESOURCE_EXHAUSTED."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rpcs: collections.Counter[str] = collections.Counter()
        self.streams: collections.Counter[str] = collections.Counter()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or (not self.limits.max_rpcs and not self.limits.max_streams):
            return handler
        service = handler_call_details.method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return handler
        # A "stream" is a response stream: what can stay open for minutes. A client-streaming
        # upload (PutObject) ends when its data does and counts as an RPC.
        streaming = bool(handler.response_streaming)
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(self._call(handler.unary_unary, streaming), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._call(handler.stream_unary, streaming), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream), **kwargs)
        return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream), **kwargs)

    def _over(self, peer: str, streaming: bool) -> str | None:
        if self.limits.max_rpcs and self.rpcs[peer] >= self.limits.max_rpcs:
            return f"{self.limits.max_rpcs} concurrent RPCs per client ({MAX_RPCS_ENV})"
        if streaming and self.limits.max_streams and self.streams[peer] >= self.limits.max_streams:
            return f"{self.limits.max_streams} concurrent streams per client ({MAX_STREAMS_ENV})"
        return None

    def _enter(self, peer: str, streaming: bool) -> None:
        self.rpcs[peer] += 1
        if streaming:
            self.streams[peer] += 1

    def _leave(self, peer: str, streaming: bool) -> None:
        for counter, counted in ((self.rpcs, True), (self.streams, streaming)):
            if counted:
                counter[peer] -= 1
                if counter[peer] <= 0:
                    del counter[peer]

    async def _refuse(self, context, limit: str) -> None:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"this client already has {limit} in flight: wait for some to finish, or raise the limit",
        )

    def _call(self, behavior, streaming: bool):
        async def call(request, context):
            peer = context.peer()
            limit = self._over(peer, streaming)
            if limit is not None:
                await self._refuse(context, limit)
            self._enter(peer, streaming)
            try:
                return await behavior(request, context)
            finally:
                self._leave(peer, streaming)

        return call

    def _stream(self, behavior):
        async def stream(request, context):
            peer = context.peer()
            limit = self._over(peer, True)
            if limit is not None:
                await self._refuse(context, limit)
            self._enter(peer, True)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            finally:
                self._leave(peer, True)

        return stream


__all__ = [
    "LimitExceeded",
    "Limits",
    "LimitsInterceptor",
    "check_prediction_window",
]

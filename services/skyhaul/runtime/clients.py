"""gRPC client channels: one per peer, traced, with generous message limits and a default deadline."""

from __future__ import annotations

import grpc

from skyhaul.runtime import telemetry
from skyhaul.runtime.server import GRPC_OPTIONS

DEFAULT_DEADLINE_S = 10.0


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=GRPC_OPTIONS, interceptors=telemetry.client_interceptors())

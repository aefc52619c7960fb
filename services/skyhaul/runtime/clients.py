"""gRPC client channels: one per peer, traced, with generous message limits and a default deadline."""

from __future__ import annotations

import grpc

from skyhaul.runtime import telemetry
from skyhaul.runtime.server import GRPC_OPTIONS

DEFAULT_DEADLINE_S = 10.0

# Links in this emulator come and go every few minutes: gRPC's default reconnect backoff (up to
# 120 s) would leave a client idle long after its link is back, so retry within seconds.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address, options=GRPC_OPTIONS + RECONNECT_OPTIONS, interceptors=telemetry.client_interceptors()
    )

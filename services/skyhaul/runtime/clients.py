"""gRPC client channels: one per peer, traced, with generous message limits and a default deadline.

Every channel carries the run's token (runtime/auth.py) and speaks TLS when SKYHAUL_TLS_* say so
(runtime/tls.py), so every service and the CLI reach a locked-down server the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from skyhaul.runtime import auth, telemetry, tls
from skyhaul.runtime.server import GRPC_OPTIONS

DEFAULT_DEADLINE_S = 10.0

# Links in this emulator come and go every few minutes: gRPC's default reconnect backoff (up to
# 120 s) would leave a client idle long after its link is back, so retry within seconds.
RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def channel(
    address: str, options: Sequence[tuple[str, object]] | None = None, token: str | None = None
) -> grpc.aio.Channel:
    """A channel to `address` with the token (`token`, else auth.load_token()) and TLS if configured.

    `options` replaces the default channel options (message limits + quick reconnects).
    """
    chosen = list(options) if options is not None else GRPC_OPTIONS + RECONNECT_OPTIONS
    interceptors = [*telemetry.client_interceptors(), *auth.client_interceptors(token or auth.load_token())]
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=chosen, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address, credentials, options=chosen + tls.channel_options(), interceptors=interceptors
    )

"""Optional TLS for every gRPC server and client, from SKYHAUL_TLS_CERT / _KEY / _CA (PEM files).

- Server: CERT + KEY turn TLS on. With CA as well, clients must present a certificate signed by
  it (mutual TLS).
- Client: CA (or CERT) turns TLS on; the server's certificate is checked against CA (the system's
  roots without it). With CERT + KEY as well, the client presents them (for a mutual-TLS server).
- SKYHAUL_TLS_SERVER_NAME: the name to check the server's certificate against, when it is not the
  host dialled (e.g. certificates for `skyhaul-region-westus2` reached through a relay on 127.0.0.1).

Nothing set: plaintext, as before. See docs/security.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

CERT_ENV = "SKYHAUL_TLS_CERT"
KEY_ENV = "SKYHAUL_TLS_KEY"
CA_ENV = "SKYHAUL_TLS_CA"
SERVER_NAME_ENV = "SKYHAUL_TLS_SERVER_NAME"


class TlsConfigError(ValueError):
    """A SKYHAUL_TLS_* variable is incomplete or names an unreadable file; the message says which."""


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    server_name: str | None

    @property
    def server_enabled(self) -> bool:
        return self.cert is not None

    @property
    def client_enabled(self) -> bool:
        return self.ca is not None or self.cert is not None


def _read(env: Mapping[str, str], var: str) -> bytes | None:
    path = env.get(var, "").strip()
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{var}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{var}: {path} is not a PEM file")
    return data


def tls_files(env: Mapping[str, str] = os.environ) -> TlsFiles:
    cert, key, ca = _read(env, CERT_ENV), _read(env, KEY_ENV), _read(env, CA_ENV)
    if (cert is None) != (key is None):
        raise TlsConfigError(f"{CERT_ENV} and {KEY_ENV} go together: set both or neither")
    return TlsFiles(cert, key, ca, env.get(SERVER_NAME_ENV, "").strip() or None)


def server_credentials(env: Mapping[str, str] = os.environ) -> grpc.ServerCredentials | None:
    files = tls_files(env)
    if not files.server_enabled:
        return None
    return grpc.ssl_server_credentials(
        [(files.key, files.cert)], root_certificates=files.ca, require_client_auth=files.ca is not None
    )


def channel_credentials(env: Mapping[str, str] = os.environ) -> grpc.ChannelCredentials | None:
    files = tls_files(env)
    if not files.client_enabled:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca, private_key=files.key, certificate_chain=files.cert
    )


def channel_options(env: Mapping[str, str] = os.environ) -> list[tuple[str, str]]:
    name = env.get(SERVER_NAME_ENV, "").strip()
    return [("grpc.ssl_target_name_override", name)] if name else []


def sync_channel(address: str, env: Mapping[str, str] = os.environ) -> grpc.Channel:
    """A blocking channel (health checks of the launcher and `skyhaul status`), TLS when configured."""
    credentials = channel_credentials(env)
    if credentials is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, credentials, options=channel_options(env))


__all__ = [
    "TlsConfigError",
    "channel_credentials",
    "channel_options",
    "server_credentials",
    "sync_channel",
    "tls_files",
]

"""Access control of the gRPC services: a per-run token that every state-changing RPC needs.

`skyhaul up` generates a token per run, hands it to its children as SKYHAUL_TOKEN and writes it to
`<run dir>/token` (mode 0600) for the CLI. A server checks it in one interceptor
(`AuthInterceptor`, in the runner's one chain) for the RPCs that `RPC_ACCESS` marks MUTATE; reads
stay open. Clients (runtime/clients.py `channel()`) send it as `authorization: Bearer <token>`.

A server started with no token at all (a developer running `skyhaul serve` by hand) says so in
one log line and lets every call through. See docs/security.md.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

TOKEN_ENV = "SKYHAUL_TOKEN"
TOKEN_FILE_ENV = "SKYHAUL_TOKEN_FILE"
TOKEN_FILE_NAME = "token"  # in the run dir of `skyhaul up`
METADATA_KEY = "authorization"
SCHEME = "Bearer "


class TokenError(ValueError):
    """SKYHAUL_TOKEN_FILE names a file that cannot be read, or the token is empty."""


class Access(enum.Enum):
    READ = "read"  # open without the token
    MUTATE = "mutate"  # changes state: needs the run's token


R, M = Access.READ, Access.MUTATE

# Every RPC of every Skyhaul service, classified. tests/integration/test_access_control.py checks
# that this table names exactly the RPCs of the contract, so a new RPC cannot slip through
# unclassified (and an unknown method is treated as MUTATE anyway: fail closed).
RPC_ACCESS: dict[str, dict[str, Access]] = {
    "skyhaul.v1.OrbitService": {
        "ListConstellations": R,
        "GetConstellation": R,
        "GetElements": R,
        "GetPositions": R,
        "StreamPositions": R,
        "GetLookAngles": R,
        "ListPasses": R,
    },
    "skyhaul.v1.LinkService": {
        "GetGroundSegment": R,
        "GetLinkState": R,
        "GetRoute": R,
        "PredictRoutes": R,  # CPU-heavy but changes nothing: bounded by runtime/limits.py instead
        "ListContacts": R,
        "WatchEvents": R,
    },
    "skyhaul.v1.ModularDataCenterService": {
        "GetInfo": R,
        "PutObject": M,
        "GetObject": R,
        "ListObjects": R,
        "GetStatus": R,
        "SetWorkload": M,
        "DeleteObject": M,
        "Reconcile": M,  # may re-upload objects the region lost
    },
    "skyhaul.v1.CloudRegionService": {
        "GetRegion": R,
        "CreateContainer": M,
        "ListContainers": R,
        "DeleteContainer": M,
        "StageBlock": M,
        "GetBlockList": R,
        "CommitBlockList": M,
        "GetBlob": R,
        "GetBlobProperties": R,
        "ListBlobs": R,
        "DeleteBlob": M,
        "Echo": R,
    },
    "skyhaul.v1.TerminalService": {
        "GetStats": R,
        "SetOverrides": M,
        "ClearOverrides": M,
    },
}

# Infrastructure every server carries: probes and tools must work without the token.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def access_of(method: str) -> Access:
    """`/package.Service/Method` -> READ or MUTATE; anything unknown is MUTATE (fail closed)."""
    service, _, name = method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return Access.READ
    return RPC_ACCESS.get(service, {}).get(name, Access.MUTATE)


# --- the token ----------------------------------------------------------------------------------


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def write_secret_file(path: Path, value: str) -> Path:
    """Write `value` to `path` readable by its owner only (0600 from creation, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode: start from a fresh one
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return path


def load_token(env: Mapping[str, str] = os.environ) -> str | None:
    """The run's token: SKYHAUL_TOKEN, else the file SKYHAUL_TOKEN_FILE names, else None."""
    token = env.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = env.get(TOKEN_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise TokenError(f"{TOKEN_FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from None
    if not token:
        raise TokenError(f"{TOKEN_FILE_ENV}: {path} is empty")
    return token


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison (the time taken says nothing about how much of it matched)."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            return text[len(SCHEME) :] if text.startswith(SCHEME) else None
    return None


HOW_TO_GET_ONE = (
    "send the run's token as metadata 'authorization: Bearer <token>'; the skyhaul CLI reads it "
    f"from {TOKEN_ENV}, {TOKEN_FILE_ENV} or the run dir of the running `skyhaul up` "
    f"(<run dir>/{TOKEN_FILE_NAME})"
)


# --- server side ------------------------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a MUTATE RPC through only with the run's token; READ RPCs always pass.

    A rejected call never reaches the servicer (its request stream is not even read), so nothing
    changes. With `token=None` every call passes (said once in the log at start).
    """

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or self.token is None:
            return handler
        method = handler_call_details.method
        if access_of(method) is Access.READ:
            return handler
        presented = bearer(handler_call_details.invocation_metadata)
        if token_matches(self.token, presented):
            return handler
        why = "no token was sent" if presented is None else "the token sent is not this run's"
        return _rejecting(
            handler, f"{method.lstrip('/')} changes state and needs the run's token ({why}): {HOW_TO_GET_ONE}"
        )


def _rejecting(handler, message: str):
    async def reject(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def reject_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator, as a streaming handler must be

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(reject, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(reject, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(reject_stream, **kwargs)
    return grpc.stream_stream_rpc_method_handler(reject_stream, **kwargs)


def server_interceptor(service: str, env: Mapping[str, str] = os.environ) -> AuthInterceptor:
    token = load_token(env)
    if token is None:
        log.warning(
            "no token configured (%s / %s): every RPC is open, state-changing ones included; "
            "`skyhaul up` always sets one",
            TOKEN_ENV,
            TOKEN_FILE_ENV,
            extra={"skyhaul.service": service},
        )
    return AuthInterceptor(token)


# --- client side ------------------------------------------------------------------------------


class _TokenMetadata:
    def __init__(self, token: str) -> None:
        self._entry = (METADATA_KEY, SCHEME + token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = [entry for entry in (details.metadata or ()) if entry[0] != METADATA_KEY]
        metadata.append(self._entry)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files each client interceptor under the first of the four kinds it is an instance of,
# so one object per kind.
class _UnaryUnary(_TokenMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_TokenMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_TokenMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_TokenMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors(token: str | None) -> list:
    """Interceptors that add `authorization: Bearer <token>` to every call of a channel (reads
    too: simpler, and harmless); none without a token."""
    if not token:
        return []
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


__all__ = [
    "Access",
    "AuthInterceptor",
    "RPC_ACCESS",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TokenError",
    "access_of",
    "client_interceptors",
    "generate_token",
    "load_token",
    "server_interceptor",
    "token_matches",
    "write_secret_file",
]


def run_security_env(run_dir: Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What `skyhaul up` gives every child: the run's token and event key (kept from `env` when
    set there, else generated), with the token also written to `<run_dir>/token` (0600) for the CLI."""
    from skyhaul.runtime import event_signing

    token = load_token(env) or generate_token()
    write_secret_file(run_dir / TOKEN_FILE_NAME, token)
    event_key = event_signing.load_key(env) or event_signing.generate_key().encode()
    return {TOKEN_ENV: token, event_signing.KEY_ENV: event_key.decode()}

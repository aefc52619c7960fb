"""The grpc.aio server runner every service uses.

It adds health (SERVING only once the service's dependencies answer, NOT_SERVING when they are
lost), reflection, the one error-mapping interceptor and tracing, and drains gracefully on
SIGTERM/SIGINT before flushing spans.

Reflection answers under both grpc.reflection.v1 (what current grpcurl, grpcui and Postman ask
first) and v1alpha (older clients), and serves the contract's files with their .proto comments.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import inspect
import logging
import signal
from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

from skyhaul.runtime import auth, errors, limits, telemetry, tls
from skyhaul.runtime.settings import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 2**20  # blocks of a few MiB and 24 h timelines fit
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
DRAIN_SECONDS = 5.0
HEALTH_INTERVAL_S = 1.0
LIVENESS_SERVICE = "liveness"

_STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    limits.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(exc: errors.SkyhaulError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes, and anything unexpected to INTERNAL with a log line."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_wrap_call(handler.unary_unary, method), **kwargs)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_wrap_call(handler.stream_unary, method), **kwargs)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_wrap_stream(handler.unary_stream, method), **kwargs)
        return grpc.stream_stream_rpc_method_handler(_wrap_stream(handler.stream_stream, method), **kwargs)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, errors.SkyhaulError):
        await context.abort(status_for(exc), str(exc))
    if isinstance(exc, NotImplementedError):
        # The generated base servicer raises this for RPCs whose issue has not landed.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
    log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error in {method} ({type(exc).__name__}); see the service log"
    )


def _wrap_call(behavior, method: str):
    async def call(request, context):
        try:
            return await behavior(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that maps every error
            await _abort(context, exc, method)

    return call


def _wrap_stream(behavior, method: str):
    async def stream(request, context):
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result) or hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, exc, method)

    return stream


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = reflection.SERVICE_NAME
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"
# Written by protos/generate.py beside the generated modules: the contract with source info.
DESCRIPTOR_SET = "descriptor_set.binpb"


@functools.cache
def documented_files() -> dict[str, bytes]:
    """The contract's FileDescriptorProtos with their comments, by file name."""
    try:
        data = (importlib.resources.files("skyhaul.v1") / DESCRIPTOR_SET).read_bytes()
    except FileNotFoundError:
        log.warning("%s missing: reflection serves the contract without its comments", DESCRIPTOR_SET)
        return {}
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    # Only our own files: the well-known types stay as the protobuf runtime registered them.
    return {f.name: f.SerializeToString() for f in descriptor_set.file if f.name.startswith("skyhaul/")}


def _register_reflection_v1_descriptor() -> None:
    """Put grpc.reflection.v1 in the default pool, so clients can describe the service they talk to.

    grpcio-reflection (1.85) ships only v1alpha; v1 has the same messages and field numbers
    under another package, so its descriptor is v1alpha's, renamed.
    """
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_v1alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = _REFLECTION_V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


class DocumentedReflectionServicer(reflection.aio.ReflectionServicer):
    """grpcio-reflection's servicer, answering with the contract's files as written (comments
    included): its own answers come from descriptors, which drop source info."""

    async def ServerReflectionInfo(self, request_iterator, context):
        documented = documented_files()
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                files = response.file_descriptor_response.file_descriptor_proto
                for i, serialized in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
                    files[i] = documented.get(name, serialized)
            yield response


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha (one servicer: the two protocols are the same on the wire)."""
    _register_reflection_v1_descriptor()
    servicer = DocumentedReflectionServicer([*service_names, REFLECTION_V1, REFLECTION_V1ALPHA])
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_v1alpha_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_v1alpha_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
            for name in (REFLECTION_V1, REFLECTION_V1ALPHA)
        ]
    )


class ServiceApp:
    """What a service gives the runner. Subclass and override what applies."""

    name: str = ""
    service_names: Sequence[str] = ()  # full gRPC service names, for health and reflection

    def register(self, server: grpc.aio.Server) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Start background work (subscriptions, workers). Called after the port is bound."""

    async def stop(self) -> None:
        """Stop background work. Called after the server drained."""

    async def ready(self) -> bool:
        """True while every dependency answers (Redis, peers)."""
        return True


class RunningServer:
    """A started server: its bound port, health servicer and stop()."""

    def __init__(self, app: ServiceApp, server: grpc.aio.Server, port: int, health: HealthServicer) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.health = health
        self._stopping = asyncio.Event()
        self._monitor: asyncio.Task | None = None
        self._serving: bool | None = None

    async def _set_health(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.app.service_names):
            await self.health.set(name, status)
        log.info(
            "health %s", "SERVING" if serving else "NOT_SERVING", extra={"skyhaul.service": self.app.name}
        )

    async def _watch_dependencies(self) -> None:
        # Re-checks dependencies until stop; ends as soon as stop is requested.
        while not self._stopping.is_set():
            try:
                ok = await asyncio.wait_for(self.app.ready(), timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - a failing check means NOT_SERVING, never a crash
                log.warning("dependency check failed: %s", exc)
                ok = False
            await self._set_health(ok)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=HEALTH_INTERVAL_S)
            except TimeoutError:
                pass

    def start_monitor(self) -> None:
        self._monitor = asyncio.create_task(self._watch_dependencies(), name=f"{self.app.name}-health")

    async def stop(self, grace: float = DRAIN_SECONDS) -> None:
        self._stopping.set()
        await self.health.enter_graceful_shutdown()
        if self._monitor is not None:
            await self._monitor
        await self.server.stop(grace)
        await self.app.stop()


async def start_server(app: ServiceApp, listen: str) -> RunningServer:
    # One chain: tracing, then the token check (a refused call reaches nothing), then the
    # per-client limits, then the error mapping around the servicer (runtime/auth.py, limits.py).
    server = grpc.aio.server(
        interceptors=[
            *telemetry.server_interceptors(),
            auth.server_interceptor(app.name),
            limits.LimitsInterceptor(limits.Limits.from_env()),
            ErrorMappingInterceptor(),
        ],
        options=GRPC_OPTIONS,
    )
    app.register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        [*app.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server
    )
    credentials = tls.server_credentials()
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    for name in ("", *app.service_names):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    # "liveness" answers SERVING while the event loop runs, whatever the dependencies say.
    await health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    running = RunningServer(app, server, port, health)
    try:
        await app.start()
    except BaseException:
        await server.stop(0)
        raise
    running.start_monitor()
    return running


async def run_until_signalled(app: ServiceApp, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain, stop the app and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(app, settings.listen)
    log.info(
        "listening", extra={"skyhaul.service": app.name, "listen": settings.listen, "port": running.port}
    )
    await stop.wait()
    log.info("draining", extra={"skyhaul.service": app.name})
    await running.stop()


def service_full_name(pb2_module, service: str) -> str:
    return pb2_module.DESCRIPTOR.services_by_name[service].full_name

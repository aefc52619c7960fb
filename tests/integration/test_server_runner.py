"""The shared server runner: error mapping, health that follows dependencies, reflection, drain."""

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from skyhaul.runtime import errors, server
from skyhaul.v1 import region_pb2, region_pb2_grpc


class FlakyRegion(region_pb2_grpc.CloudRegionServiceServicer):
    async def Echo(self, request, context):
        match request.payload:
            case b"bad":
                raise errors.InvalidArgument("payload 'bad' is not allowed: send anything else")
            case b"missing":
                raise errors.NotFound("no such thing")
            case b"boom":
                raise RuntimeError("a bug")
        return region_pb2.EchoResponse(payload=request.payload, region_id="test")

    async def ListBlobs(self, request, context):
        raise errors.FailedPrecondition("container is being deleted")

    async def GetBlob(self, request, context):
        yield region_pb2.GetBlobResponse(data=b"first")
        raise errors.Unavailable("disk went away")


class App(server.ServiceApp):
    name = "region"
    service_names = (server.service_full_name(region_pb2, "CloudRegionService"),)

    def __init__(self):
        self.dependency_ok = False
        self.stopped = False

    def register(self, srv):
        region_pb2_grpc.add_CloudRegionServiceServicer_to_server(FlakyRegion(), srv)

    async def ready(self):
        return self.dependency_ok

    async def stop(self):
        self.stopped = True


@pytest.fixture
async def running(monkeypatch):
    monkeypatch.setattr(server, "HEALTH_INTERVAL_S", 0.05)
    app = App()
    srv = await server.start_server(app, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}")
    yield app, srv, channel
    await channel.close()
    await srv.stop(grace=0.1)


async def _health(channel, service=""):
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return reply.status


async def _wait_for(channel, status, service=""):
    for _ in range(200):
        if await _health(channel, service) == status:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"health never became {status}")


async def test_domain_errors_map_to_status_codes(running):
    app, srv, channel = running
    stub = region_pb2_grpc.CloudRegionServiceStub(channel)
    assert (await stub.Echo(region_pb2.EchoRequest(payload=b"hi"), timeout=2)).payload == b"hi"
    cases = {
        b"bad": grpc.StatusCode.INVALID_ARGUMENT,
        b"missing": grpc.StatusCode.NOT_FOUND,
        b"boom": grpc.StatusCode.INTERNAL,
    }
    for payload, code in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Echo(region_pb2.EchoRequest(payload=payload), timeout=2)
        assert err.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Echo(region_pb2.EchoRequest(payload=b"bad"), timeout=2)
    assert "send anything else" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListBlobs(region_pb2.ListBlobsRequest(), timeout=2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A stream that fails after its first message still delivers that message, then the status.
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in stub.GetBlob(region_pb2.GetBlobRequest(), timeout=2):
            received.append(chunk.data)
    assert received == [b"first"] and err.value.code() == grpc.StatusCode.UNAVAILABLE
    # An RPC nobody implemented answers UNIMPLEMENTED.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRegion(region_pb2.GetRegionRequest(), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_follows_dependencies(running):
    app, srv, channel = running
    name = App.service_names[0]
    await _wait_for(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Liveness does not follow dependencies: losing Redis must not restart a pod.
    assert await _health(channel, server.LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    app.dependency_ok = True
    await _wait_for(channel, health_pb2.HealthCheckResponse.SERVING)
    await _wait_for(channel, health_pb2.HealthCheckResponse.SERVING, name)
    app.dependency_ok = False
    await _wait_for(channel, health_pb2.HealthCheckResponse.NOT_SERVING, name)


async def test_reflection_lists_the_service(running):
    _, _, channel = running
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        break
    assert "skyhaul.v1.CloudRegionService" in names and "grpc.health.v1.Health" in names


def _reflection_v1_call(channel):
    """A reflection v1 call built from the descriptor the server registered (grpcio-reflection has
    no v1 stub), so this also checks that the v1 descriptor is sound."""
    pool = descriptor_pool.Default()
    request_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest")
    )
    response_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse")
    )
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return call, request_cls


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_v1_and_v1alpha_serve_the_contract_with_its_comments(running, version):
    _, _, channel = running
    if version == "v1":
        call, request_cls = _reflection_v1_call(channel)
    else:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        request_cls = reflection_pb2.ServerReflectionRequest
    requests = [
        request_cls(list_services=""),
        request_cls(file_containing_symbol="skyhaul.v1.CloudRegionService"),
        request_cls(file_containing_symbol="skyhaul.v1.NoSuchService"),
    ]
    responses = [r async for r in call(iter(requests))]
    listed = {s.name for s in responses[0].list_services_response.service}
    assert {
        "skyhaul.v1.CloudRegionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed
    files = {
        f.name: f
        for f in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            responses[1].file_descriptor_response.file_descriptor_proto,
        )
    }
    # region.proto and what it imports, with the comments written in protos/
    assert {"skyhaul/v1/region.proto", "skyhaul/v1/common.proto"} <= set(files)
    comments = " ".join(
        loc.leading_comments + loc.trailing_comments
        for loc in files["skyhaul/v1/region.proto"].source_code_info.location
    )
    assert "block" in comments.lower()
    assert responses[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_stop_drains_and_stops_the_app():
    app = App()
    srv = await server.start_server(app, "127.0.0.1:0")
    await srv.stop(grace=0.1)
    assert app.stopped

"""The region service (not implemented yet: every RPC answers UNIMPLEMENTED)."""

from skyhaul.runtime.server import UnimplementedApp
from skyhaul.v1 import region_pb2, region_pb2_grpc


def build(settings, clock) -> UnimplementedApp:
    return UnimplementedApp("region", region_pb2, region_pb2_grpc, "CloudRegionService")

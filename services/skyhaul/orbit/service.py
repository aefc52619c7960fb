"""The orbit service (not implemented yet: every RPC answers UNIMPLEMENTED)."""

from skyhaul.runtime.server import UnimplementedApp
from skyhaul.v1 import orbit_pb2, orbit_pb2_grpc


def build(settings, clock) -> UnimplementedApp:
    return UnimplementedApp("orbit", orbit_pb2, orbit_pb2_grpc, "OrbitService")

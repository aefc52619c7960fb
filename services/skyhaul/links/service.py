"""The links service (not implemented yet: every RPC answers UNIMPLEMENTED)."""

from skyhaul.runtime.server import UnimplementedApp
from skyhaul.v1 import links_pb2, links_pb2_grpc


def build(settings, clock) -> UnimplementedApp:
    return UnimplementedApp("links", links_pb2, links_pb2_grpc, "LinkService")

"""The mdc service (not implemented yet: every RPC answers UNIMPLEMENTED)."""

from skyhaul.runtime.server import UnimplementedApp
from skyhaul.v1 import mdc_pb2, mdc_pb2_grpc


def build(settings, clock) -> UnimplementedApp:
    return UnimplementedApp("mdc", mdc_pb2, mdc_pb2_grpc, "ModularDataCenterService")

"""The terminal service (not implemented yet: every RPC answers UNIMPLEMENTED)."""

from skyhaul.runtime.server import UnimplementedApp
from skyhaul.v1 import terminal_pb2, terminal_pb2_grpc


def build(settings, clock) -> UnimplementedApp:
    return UnimplementedApp("terminal", terminal_pb2, terminal_pb2_grpc, "TerminalService")

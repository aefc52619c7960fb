"""Pure orbit and link physics: numpy/scipy only, no I/O, no gRPC, no Redis."""

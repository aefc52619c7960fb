"""Rules and codecs of the contract that several services (and the CLI) share.

A service's own folder is reached only through gRPC; what two of them must agree on — which blob
names are valid, how orbital data travels in protobuf — lives here, once.
"""

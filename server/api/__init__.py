"""gRPC layer: the call interceptor (auth, errors, metrics), servicers, unimplemented stubs."""

"""befriend.server — grpc.aio servicers, storage, domain services, runtime."""

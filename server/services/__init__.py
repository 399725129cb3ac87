"""Domain services: business rules over repositories. No gRPC, no SQL."""

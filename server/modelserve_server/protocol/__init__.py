"""Wire protocols: the V2 REST codec and FastAPI app (and, in ``protocol.grpc``, the gRPC service)."""

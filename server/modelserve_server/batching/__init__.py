"""Dynamic batching: :mod:`.scheduler` decides *when* and *what* runs, :mod:`.merge` joins and splits.

Neither module knows about HTTP, gRPC or ONNX Runtime, so both are unit-tested without a server.
"""

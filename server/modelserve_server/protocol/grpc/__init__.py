"""The Open Inference Protocol over gRPC: ``grpc_service.proto``, its generated stubs, the codec and
the grpc.aio server (:func:`modelserve_server.protocol.grpc.server.start_grpc_server`).

Nothing is imported here, so ``import modelserve_server.protocol.grpc`` stays cheap for the REST path.
"""

"""The Service in front of the server pods: HTTP (inference + /metrics) and gRPC.

The Service ports are the user's (``service.httpPort``/``grpcPort``); the target ports are the
container's named ports, so the server always listens on unprivileged ports.
"""

from __future__ import annotations

from modelserve_operator.render.common import Obj, RenderContext


def render_service(ctx: RenderContext) -> Obj:
    svc = ctx.spec.service
    ports: list[Obj] = [
        {
            "name": "http",
            "port": svc.http_port,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    if svc.grpc_port:
        ports.append(
            {
                "name": "grpc",
                "port": svc.grpc_port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(annotations=svc.annotations),
        "spec": {"type": svc.type, "selector": ctx.selector, "ports": ports},
    }

"""The optional Ingress (networking.k8s.io/v1) routing a host and path prefix to the HTTP port."""

from __future__ import annotations

from modelserve_operator.render.common import Obj, RenderContext


def render_ingress(ctx: RenderContext) -> Obj | None:
    ing = ctx.spec.service.ingress
    if ing is None:
        return None
    spec: Obj = {}
    if ing.class_name:
        spec["ingressClassName"] = ing.class_name
    if ing.tls_secret:
        spec["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    spec["rules"] = [
        {
            "host": ing.host,
            "http": {
                "paths": [
                    {
                        "path": ing.path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": ctx.name, "port": {"name": "http"}}},
                    }
                ]
            },
        }
    ]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ctx.metadata(), "spec": spec}

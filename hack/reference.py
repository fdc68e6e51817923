"""README reference sections, generated from the code (``make generate`` writes them).

Why generated: the CRD reference must say what the API server accepts and the metrics reference
what ``/metrics`` serves. Both already exist as code (the pydantic model in
``modelserve_operator.api`` and the prometheus_client objects in the two metrics modules); a
hand-written copy would drift, so the README sections between markers are rendered from them and a
test fails when the committed README differs.
"""

from __future__ import annotations

from typing import Any

# --------------------------------------------------------------------------- CRD reference


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (possibly wrapped in ``allOf``/``anyOf`` with ``null``) to the real schema."""
    if "$ref" in schema:
        ref = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return {**ref, **{k: v for k, v in schema.items() if k != "$ref"}}
    for key in ("anyOf", "allOf", "oneOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if len(options) == 1:
            merged = {k: v for k, v in schema.items() if k != key}
            return {**_resolve(options[0], defs), **merged}
    return schema


def _type_name(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = _resolve(schema, defs)
    if "enum" in schema:
        return ", ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        names = [_type_name(o, defs) for o in options if o.get("type") != "null"]
        return " or ".join(dict.fromkeys(names))
    kind = schema.get("type", "object")
    if kind == "array":
        return f"list of {_type_name(schema.get('items', {}), defs)}"
    if kind == "object" and "properties" not in schema and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        inner = _type_name(extra, defs) if isinstance(extra, dict) else "any"
        return f"map of {inner}"
    return str(kind)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _format_default(value: Any) -> str:
    if value is None:
        return ""
    if value in ({}, []):
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list):
        return f"`{_cell(value)}`"
    return f"`{value}`"


def _rows(schema: dict[str, Any], defs: dict[str, Any], prefix: str, rules: list[str]) -> list[str]:
    rows: list[str] = []
    required = set(schema.get("required", []))
    for cel in schema.get("x-kubernetes-validations", []):
        rules.append(f"- `{prefix or 'spec'}`: {cel['message']}")
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        resolved = _resolve(prop, defs)
        constraints = []
        for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"),
                           ("maxLength", "max length")):
            if key in resolved:
                constraints.append(f"{label} {resolved[key]}")
        description = resolved.get("description", "")
        if constraints:
            description = f"{description} ({', '.join(constraints)})"
        rows.append(
            f"| `{path}` | {_cell(_type_name(prop, defs))} | {'yes' if name in required else ''} | "
            f"{_cell(_format_default(prop.get('default', resolved.get('default'))))} | {_cell(description)} |"
        )
        if resolved.get("type", "object") == "object" and "properties" in resolved:
            rows += _rows(resolved, defs, path, rules)
        items = resolved.get("items")
        if resolved.get("type") == "array" and isinstance(items, dict):
            item = _resolve(items, defs)
            if "properties" in item:
                rows += _rows(item, defs, f"{path}[]", rules)
    return rows


def crd_reference_markdown() -> str:
    """A table of every ``spec`` field of ModelDeployment, from ``modelserve_operator.api``."""
    from modelserve_operator import api

    schema = api.ModelDeploymentSpec.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    rules: list[str] = []
    rows = _rows(schema, defs, "", rules)
    lines = [
        f"`apiVersion: {api.API_VERSION}`, `kind: {api.KIND}` (plural `{api.PLURAL}`, short name "
        f"`{api.SHORT_NAME}`, namespaced). Fields under `spec`; generated from "
        "`modelserve_operator.api.ModelDeploymentSpec`.",
        "",
        "| Field | Type | Required | Default | Description |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    if rules:
        lines += ["", "Cross-field rules the API server enforces (CEL), with the message `kubectl` shows:",
                  "",
                  *rules]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- metrics reference


def _describe(value: Any) -> tuple[str, str, str, tuple[str, ...]] | None:
    """(exposed name, type, help, label names) of a prometheus_client metric or metric family."""
    from prometheus_client.core import Metric
    from prometheus_client.metrics import MetricWrapperBase

    if isinstance(value, MetricWrapperBase):
        kind, name, doc = str(value._type), str(value._name), str(value._documentation)
        labels = tuple(value._labelnames)
    elif isinstance(value, Metric):
        kind, name, doc = str(value.type), str(value.name), str(value.documentation)
        labels = tuple(getattr(value, "_labelnames", ()))
    else:
        return None
    exposed = f"{name}_total" if kind == "counter" else name
    return exposed, kind, doc, labels


def server_metrics() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """Every series family the inference server can export (GPU ones included, NVML not needed)."""
    from modelserve_server import metrics

    found = [_describe(v) for v in vars(metrics.Metrics(enable_gpu=False)).values()]
    # The NVML families, as the collector yields them (with no GPU handle: no samples, same schema).
    found += [_describe(family) for family in metrics.GpuCollector(None, []).collect()]
    described = {d[0]: d for d in found if d is not None}
    missing = set(metrics.METRIC_HELP) - set(described)
    if missing:
        raise ValueError(f"metrics named in METRIC_HELP but not created by Metrics: {sorted(missing)}")
    return [described[name] for name in metrics.METRIC_HELP]


def operator_metrics() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The operator's metrics (module-level objects in ``modelserve_operator.metrics``)."""
    from modelserve_operator import metrics

    found = [_describe(v) for v in vars(metrics).values()]
    return sorted(d for d in found if d is not None)


def metrics_reference_markdown() -> str:
    """Tables of the server's and the operator's metrics, from their metrics modules."""
    sections = [
        ("Inference server (`GET /metrics` on the HTTP port of every model pod), from "
         "`modelserve_server.metrics`", server_metrics()),
        ("Operator (`GET /metrics` on the operator's metrics port), from `modelserve_operator.metrics`",
         operator_metrics()),
    ]
    lines: list[str] = []
    for title, rows in sections:
        lines += [f"**{title}**:", "", "| Metric | Type | Labels | Description |",
                  "| --- | --- | --- | --- |"]
        for name, kind, doc, labels in rows:
            label_text = ", ".join(f"`{label}`" for label in labels)
            lines.append(f"| `{name}` | {kind} | {label_text} | {_cell(doc)} |")
        lines.append("")
    return "\n".join(lines)

"""The ModelDeployment API (``serving.modelserve.io/v1alpha1``): the one typed model.

Why one pydantic model: the CRD's OpenAPI schema (``crd.py``), the renderer's input
(``render/``), the reconciler's parsing and the README's reference are all derived from the
classes below, so a field cannot exist in one place and be missing in another. Every field
has a description (it becomes ``kubectl explain`` text) and, where one makes sense, a default
(it becomes the API server's default, so a stored object shows the value actually used).

Each cross-field rule is one :class:`Rule` row in its model's ``RULES``: the CEL expression
(``x-kubernetes-validations``, enforced by the API server at ``kubectl apply``), the message,
the field it points at, and the Python check that :func:`parse_spec` runs (so objects that
bypassed the API server's validation, e.g. in kmock or from an older CRD, still fail with the
same message). The two halves of a rule sit side by side and cannot drift apart unnoticed; a
test evaluates both (cel-python) on the same specs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from modelserve_operator.quantity import QUANTITY_PATTERN, parse_quantity

GROUP = "serving.modelserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAME = "md"
CRD_NAME = f"{PLURAL}.{GROUP}"

# URI schemes the fetcher understands (issue 2) plus pvc:// (mounted, never fetched).
URI_SCHEMES = ("file", "http", "https", "s3", "pvc")
# A plain absolute path is a file on the node image (the fetcher treats it like file://).
URI_PATTERN = r"^((file|https?|s3|pvc)://.+|/.+)$"
# One path segment: not empty, not "." or "..", no "#" (a fragment follows).
_SEGMENT = r"([^/.#][^/#]*|[.][^/.#][^/#]*|[.][.][^/#]+)"
PVC_PATTERN = rf"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/{_SEGMENT})+$"
PVC_MESSAGE = (
    "a pvc URI must read pvc://<claim>/<path inside the claim>, the claim a lower-case DNS name and "
    "the path without empty, '.' or '..' segments"
)
# A plain path or file:// URI: normalised, and a .onnx file or a directory at least two levels deep.
LOCAL_PATTERN = rf"^(file://(localhost)?)?(/{_SEGMENT})*(/{_SEGMENT}/{_SEGMENT}|/[^/#]+[.]onnx)(#.*)?$"
LOCAL_MESSAGE = (
    "a local model path (a plain path or file://) must be normalised (no '//', '.' or '..' segments) "
    "and name a .onnx file or a directory at least two levels deep: '/', '//' or a top-level "
    "directory such as /etc would copy a system tree into the pod"
)
URI_MESSAGE = "model.uri must be an absolute path or a file://, http://, https://, s3:// or pvc:// URI"
# An extended resource name such as nvidia.com/gpu or amd.com/gpu (domain-qualified).
EXTENDED_RESOURCE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# metadata.name must be a DNS-1035 label: it names the Service (and every other child).
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63
# Kubernetes names and label syntax (apimachinery's validation), written for both RE2 (CEL) and
# Python's re: no backslashes, dots as [.].
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SUBDOMAIN_PATTERN = rf"^{_DNS_LABEL}([.]{_DNS_LABEL})*$"
SUBDOMAIN_MAX = 253
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
LABEL_KEY_PATTERN = rf"^({_DNS_LABEL}([.]{_DNS_LABEL})*/)?{_LABEL_NAME}$"
LABEL_KEY_MAX = 317  # a 253-character prefix, "/", a 63-character name
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
LABEL_VALUE_MAX = 63
MAP_MAX = 64
"""Most entries of a label or annotation map (bounds the CEL cost the API server estimates)."""
KEY_WORDS = "an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', "
KEY_WORDS += "starting and ending with a letter or digit"
VALUE_WORDS = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
NAME_WORDS = "a lower-case DNS subdomain (letters, digits, '-' and '.', at most 253 characters)"
# Flags of `modelserve serve` the operator sets (and their argparse abbreviations).
OWNED_ARG_PATTERN = (
    r"^--(h(o(st?)?)?|ht(t(p(-(p(o(rt?)?)?)?)?)?)?|g(r(p(c(-(p(o(rt?)?)?)?)?)?)?)?"
    r"|m(o(d(e(l(-.*)?)?)?)?)?)(=.*)?$"
)
MIN_MEMORY = "32Mi"

Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
"""A Kubernetes quantity ("500m", "2Gi", 4): int-or-string in the CRD."""

IntOrPercent = Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=r"^[0-9]{1,3}%$")]
"""A pod count or a percentage ("50%"), as in a PodDisruptionBudget."""


def cel_regex(pattern: str, chunk: int = 24) -> str:
    """A regular expression as a CEL string literal, in ``+``-joined pieces: the CRD's YAML can
    then fold a long rule at the spaces between them (yamllint holds lines to 140 columns)."""
    pieces = [pattern[i : i + chunk] for i in range(0, len(pattern), chunk)] or [""]
    if any("'" in piece for piece in pieces):
        raise ValueError(f"a CEL pattern cannot hold a single quote: {pattern}")
    return " + ".join(f"'{piece}'" for piece in pieces)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    """One ``x-kubernetes-validations`` entry (``fieldPath`` points kubectl's error at a field)."""
    out: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


@dataclass(frozen=True)
class Rule:
    """One validation rule, written once: CEL for the API server, a Python check for parse_spec.

    ``cel`` sees ``self`` as the object the rule is attached to (its model's schema node);
    ``check`` gets the parsed model instance and returns True when the rule holds; ``field``
    is the ``fieldPath`` kubectl's error points at, relative to that object.
    """

    cel: str
    message: str
    field: str | None
    check: Callable[[Any], bool]

    def schema(self) -> dict[str, JsonValue]:
        return cel(self.cel, self.message, self.field)


NAME_RULE = Rule(
    f"self.metadata.name.size() <= {NAME_MAX} && self.metadata.name.matches({cel_regex(NAME_PATTERN)})",
    f"metadata.name must be a DNS-1035 label of at most {NAME_MAX} characters (lower-case "
    "letters, digits and '-', starting with a letter): it names the Service",
    None,
    lambda md: (
        len(str(md["metadata"]["name"])) <= NAME_MAX
        and re.search(NAME_PATTERN, str(md["metadata"]["name"])) is not None
    ),
)
"""The one rule on the whole object (the root of the CRD's schema), not on the spec."""


def _matches(pattern: str, value: str | None) -> bool:
    return value is None or re.search(pattern, value) is not None


def name_rule(field: str, path: str) -> Rule:
    """``self.<field>`` (optional) must be an object name (DNS subdomain)."""
    attr = _snake(field)
    return Rule(
        f"!has(self.{field}) || self.{field}.matches({cel_regex(SUBDOMAIN_PATTERN)})",
        f"{path} must be {NAME_WORDS}",
        f".{field}",
        lambda m: _matches(SUBDOMAIN_PATTERN, getattr(m, attr)),
    )


def label_map_rule(field: str, path: str, *, values: bool) -> Rule:
    """Every key of the map ``self.<field>`` is a label (or annotation) key, and with ``values``
    every value a label value."""
    attr = _snake(field)
    cel_check = f"k.matches({cel_regex(LABEL_KEY_PATTERN)})"
    if values:
        cel_check += f" && self.{field}[k].matches({cel_regex(LABEL_VALUE_PATTERN)})"
    words = f"{path} keys must be label keys ({KEY_WORDS})"
    if values:
        words += f", and its values label values ({VALUE_WORDS})"

    def check(m: Any) -> bool:
        items: dict[str, str] = getattr(m, attr)
        return all(
            _matches(LABEL_KEY_PATTERN, k) and (not values or _matches(LABEL_VALUE_PATTERN, v))
            for k, v in items.items()
        )

    return Rule(f"!has(self.{field}) || self.{field}.all(k, {cel_check})", words, f".{field}", check)


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda c: "_" + c.group(1).lower(), camel)


LabelValue = Annotated[str, StringConstraints(max_length=LABEL_VALUE_MAX)]
ObjectName = Annotated[str, StringConstraints(max_length=SUBDOMAIN_MAX)]


def _rules_schema(schema: dict[str, JsonValue], model: type[Any]) -> None:
    """pydantic's json_schema_extra hook: a model's ``RULES`` become its CEL validations."""
    rules: tuple[Rule, ...] = getattr(model, "RULES", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.schema() for rule in rules]


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected, snake_case or camelCase accepted, and
    the model's ``RULES`` both in its JSON schema (CEL) and checked on every parse."""

    RULES: ClassVar[tuple[Rule, ...]] = ()

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        json_schema_extra=_rules_schema,
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).RULES:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self


# --------------------------------------------------------------------------- model


class ModelSource(_Model):
    """Where the ONNX model comes from."""

    RULES = (
        Rule(f"self.uri.matches({cel_regex(URI_PATTERN)})", URI_MESSAGE, ".uri",
             lambda m: re.search(URI_PATTERN, m.uri) is not None),
        Rule("!has(self.sha256) || !self.uri.startsWith('pvc://')",
             "model.sha256 cannot be verified for a pvc:// model (it is mounted, not fetched)", ".sha256",
             lambda m: m.sha256 is None or not m.uri.startswith("pvc://")),
        Rule("!has(self.credentialsSecret) || self.uri.startsWith('s3://')",
             "model.credentialsSecret is used for s3:// URIs only", ".credentialsSecret",
             lambda m: m.credentials_secret is None or m.uri.startswith("s3://")),
        Rule(f"!self.uri.startsWith('pvc://') || self.uri.matches({cel_regex(PVC_PATTERN)})",
             PVC_MESSAGE, ".uri",
             lambda m: not m.uri.startswith("pvc://") or re.search(PVC_PATTERN, m.uri) is not None),
        Rule("!(self.uri.startsWith('/') || self.uri.startsWith('file://')) "
             f"|| self.uri.matches({cel_regex(LOCAL_PATTERN)})", LOCAL_MESSAGE, ".uri",
             lambda m: not m.uri.startswith(("/", "file://")) or re.search(LOCAL_PATTERN, m.uri) is not None),
    )  # fmt: skip

    uri: str = Field(
        min_length=1,
        max_length=2048,
        description=(
            "Location of the .onnx file: file:///path or /path (inside the server image), "
            "http(s)://..., s3://bucket/key (credentials from credentialsSecret), or "
            "pvc://<claim>/<path> (the claim is mounted read-only instead of fetched)."
        ),
    )
    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Model name in the inference API (/v2/models/<name>); defaults to metadata.name.",
    )
    version: str = Field(
        default="1",
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Model version, recorded in the app.kubernetes.io/version label of the pods.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        description="Expected SHA-256 (hex) of the model file; a mismatch fails the fetch init container.",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "Name of a Secret in the same namespace whose keys become environment variables of the "
            "fetch init container (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)."
        ),
    )


# --------------------------------------------------------------------------- runtime


class EnvVar(_Model):
    """An environment variable of the server container (the Kubernetes EnvVar shape)."""

    RULES = (
        Rule("!has(self.value) || self.value == '' || !has(self.valueFrom)",
             "runtime.env: an entry sets either value or valueFrom, not both", ".valueFrom",
             lambda m: not m.value or m.value_from is None),
    )  # fmt: skip

    name: str = Field(
        min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name."
    )
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


def positive_quantity_rule(field: str, path: str, *, optional: bool) -> Rule:
    """``self.<field>`` (a quantity) must be greater than 0: a negative or zero size passes the
    quantity pattern and then breaks the pod (an emptyDir of size 0, a negative CUDA limit)."""
    attr = _snake(field)
    value = f"string(self.{field})"
    guard = f"!has(self.{field}) || " if optional else ""
    return Rule(
        f"{guard}!isQuantity( {value} ) || quantity( {value} ).compareTo(quantity('0')) > 0",
        f"{path} must be greater than 0",
        f".{field}",
        lambda m: getattr(m, attr) is None or parse_quantity(getattr(m, attr)) > 0,
    )


class EngineCache(_Model):
    """Where the TensorRT engine and timing caches live (keyed by model, GPU and versions inside)."""

    RULES = (
        positive_quantity_rule("sizeLimit", "runtime.accelerator.engineCache.sizeLimit", optional=False),
    )

    claim_name: str | None = Field(
        default=None,
        max_length=SUBDOMAIN_MAX,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description=(
            "A PersistentVolumeClaim for the cache, shared by every replica and rollout (ReadWriteMany "
            "when pods run on several nodes); empty: an emptyDir, which survives container restarts "
            "but not the pod."
        ),
    )
    size_limit: Quantity = Field(default="4Gi", description="sizeLimit of the emptyDir cache.")


class Accelerator(_Model):
    """GPU execution-provider options (used when the server runs CUDA or TensorRT)."""

    RULES = (positive_quantity_rule("gpuMemLimit", "runtime.accelerator.gpuMemLimit", optional=True),)

    fp16: bool = Field(default=False, description="Let TensorRT build FP16 kernels (opt-in).")
    int8: bool = Field(
        default=False, description="Let TensorRT build INT8 kernels (opt-in; for QDQ-quantised models)."
    )
    gpu_mem_limit: Quantity | None = Field(
        default=None,
        description=(
            "Most GPU memory the CUDA provider's arena may hold (e.g. 8Gi), so several models can share "
            "a GPU; no limit by default."
        ),
    )
    arena_strategy: Literal["NextPowerOfTwo", "SameAsRequested"] = Field(
        default="NextPowerOfTwo",
        description="How the CUDA arena grows; SameAsRequested wastes less memory on a shared GPU.",
    )
    dynamic_dims: dict[str, Annotated[int, Field(ge=1, le=1 << 20)]] = Field(
        default_factory=dict,
        max_length=MAP_MAX,
        description=(
            "Sizes of symbolic non-batch input dimensions (name -> size): TensorRT's engines are built "
            "for batch 1..maxBatchSize at these sizes during warm-up, before the pod turns Ready."
        ),
    )
    engine_cache: EngineCache = Field(
        default_factory=EngineCache, description="TensorRT engine cache volume (an emptyDir by default)."
    )
    engine_build_seconds: int = Field(
        default=900,
        ge=0,
        le=7200,
        description=(
            "Longest a cold TensorRT engine build may take; the startup probe allows this much on top of "
            "the model load when TensorRT may be used."
        ),
    )


class Runtime(_Model):
    """How the inference server runs."""

    RULES = (
        Rule("!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
             "runtime.env names must be unique", ".env",
             lambda m: len({e.name for e in m.env}) == len(m.env)),
        Rule(f"!has(self.args) || self.args.all(a, !a.matches({cel_regex(OWNED_ARG_PATTERN)}))",
             "runtime.args must not set --host, --http-port, --grpc-port or --model (or an abbreviation): "
             "the operator sets them to match the pod's probes, ports and model volume", ".args",
             lambda m: not any(re.search(OWNED_ARG_PATTERN, a) for a in m.args)),
    )  # fmt: skip

    image: str | None = Field(
        default=None,
        description=(
            "Server image; defaults to the operator's configured CPU image, or its GPU image when "
            "resources.gpu > 0."
        ),
    )
    providers: str = Field(
        default="auto",
        pattern=r"^(auto|(tensorrt|cuda|cpu)(,(tensorrt|cuda|cpu))*)$",
        description=(
            "ONNX Runtime execution providers in preference order ('auto' takes TensorRT, CUDA, CPU "
            "as available); an explicitly named provider that cannot load keeps the pod unready."
        ),
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "ONNX Runtime intra-op threads; defaults to the whole CPUs of resources.limits.cpu (at least 1), "
            "else the server's own reading of its cgroup CPU quota."
        ),
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Largest dynamic batch the server forms."
    )
    max_batch_delay_ms: float = Field(
        default=2, ge=0, le=10000, description="Longest time a request waits for a batch to fill."
    )
    require_batching: bool = Field(
        default=False,
        description=(
            "Refuse a model (Degraded, reason ModelInvalid) unless every input and output has a "
            "dynamic first dimension. Without it such a model is served one request at a time "
            "(status.modelSignature shows its shapes)."
        ),
    )
    drain_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description=(
            "Seconds the server keeps serving in-flight requests after SIGTERM; the pod's "
            "termination grace period is set longer than this."
        ),
    )
    accelerator: Accelerator = Field(
        default_factory=Accelerator, description="CUDA and TensorRT options (GPU pods)."
    )
    args: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list, max_length=64, description="Extra arguments appended to `modelserve serve`."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables of the server container.",
    )


# --------------------------------------------------------------------------- resources


def _quantity_rules(path: str, *, optional: bool) -> tuple[Rule, Rule]:
    """cpu > 0 and memory >= MIN_MEMORY (a negative or 1-byte quantity passes the pattern and then
    fails or starves the pod)."""

    def rule(name: str, cel_test: str, words: str, test: Callable[[Any], bool]) -> Rule:
        value = f"string(self.{name})"
        guard = f"!has(self.{name}) || " if optional else ""
        return Rule(
            f"{guard}!isQuantity( {value} ) || {cel_test.format(q=f'quantity( {value} )')}",
            f"{path}.{name} {words}",
            f".{name}",
            lambda m: getattr(m, name) is None or test(parse_quantity(getattr(m, name))),
        )

    return (
        rule("cpu", "{q}.compareTo(quantity('0')) > 0", "must be greater than 0", lambda q: q > 0),
        rule(
            "memory",
            f"{{q}}.compareTo(quantity('{MIN_MEMORY}')) >= 0",
            f"must be at least {MIN_MEMORY} (the server process alone needs more)",
            lambda q: q >= parse_quantity(MIN_MEMORY),
        ),
    )


class ResourceRequests(_Model):
    """CPU and memory the scheduler reserves for the server container (Kubernetes quantities)."""

    RULES = _quantity_rules("resources.requests", optional=False)

    cpu: Quantity = Field(default="500m", description="CPU request, e.g. 500m or 2.")
    memory: Quantity = Field(default="1Gi", description="Memory request, e.g. 512Mi or 4Gi.")


class ResourceLimits(_Model):
    """Upper bounds of the server container (Kubernetes quantities)."""

    RULES = _quantity_rules("resources.limits", optional=True)

    cpu: Quantity | None = Field(
        default=None, description="CPU limit; none by default (throttling hurts latency)."
    )
    memory: Quantity | None = Field(
        default=None,
        description="Memory limit; defaults to the memory request (a pod that outgrows it is restarted).",
    )


def _request_within_limit(name: str) -> Rule:
    """requests.<name> <= limits.<name> when a limit is set (the API server refuses the pod otherwise)."""

    def check(res: Resources) -> bool:
        request, limit = getattr(res.requests, name), getattr(res.limits, name)
        return limit is None or parse_quantity(request) <= parse_quantity(limit)

    request, limit = f"string(self.requests.{name})", f"string(self.limits.{name})"
    return Rule(
        f"!has(self.limits.{name}) || !isQuantity({request}) || !isQuantity({limit}) "
        f"|| quantity({request}).compareTo(quantity({limit})) <= 0",
        f"resources.requests.{name} must not exceed resources.limits.{name}",
        f".requests.{name}",
        check,
    )


class Resources(_Model):
    """Compute resources of each server pod."""

    RULES = (_request_within_limit("cpu"), _request_within_limit("memory"))

    gpu: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "GPUs per pod (0 = CPU only). Set as a limit on gpuResource, with a toleration of the "
            "GPU nodes' NoSchedule taint added automatically."
        ),
    )
    gpu_resource: str | None = Field(
        default=None,
        pattern=EXTENDED_RESOURCE_PATTERN,
        description=(
            "Extended resource name of the GPU (nvidia.com/gpu, amd.com/gpu, a MIG profile such as "
            "nvidia.com/mig-1g.10gb); defaults to the operator's configured GPU resource (nvidia.com/gpu)."
        ),
    )
    requests: ResourceRequests = Field(
        default_factory=ResourceRequests, description="CPU and memory requests of the server container."
    )
    limits: ResourceLimits = Field(
        default_factory=ResourceLimits,
        description="CPU and memory limits of the server container (no CPU limit by default).",
    )


# --------------------------------------------------------------------------- scaling

ScalingMetric = Literal["inflight", "rps", "cpu", "gpu"]


class Scaling(_Model):
    """Replica count and autoscaling. minReplicas == maxReplicas means a fixed size and no HPA."""

    RULES = (
        Rule("self.minReplicas <= self.maxReplicas",
             "scaling.minReplicas must be less than or equal to scaling.maxReplicas "
             "(kubectl scale sets minReplicas: raise maxReplicas first)", ".minReplicas",
             lambda m: m.min_replicas <= m.max_replicas),
        Rule("self.metric != 'cpu' || !has(self.target) || self.target <= 1000.0",
             "scaling.target for metric cpu is a utilisation percentage (1-1000)", ".target",
             lambda m: m.metric != "cpu" or m.target is None or m.target <= 1000),
    )  # fmt: skip

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description=(
            "Fewest replicas (the scale subresource's replicas: `kubectl scale` sets it). "
            "0 scales the model to zero: no pods, no HPA."
        ),
    )
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replicas the HPA may create.")
    metric: ScalingMetric = Field(
        default="inflight",
        description=(
            "Autoscaling signal: inflight (average modelserve_inflight_requests per pod), rps "
            "(average requests per second per pod), cpu (utilisation % of the request), gpu "
            "(average GPU utilisation % per pod). The custom metrics come from prometheus-adapter."
        ),
    )
    target: float | None = Field(
        default=None,
        gt=0,
        description=("Target per pod for the metric; defaults: inflight 4, rps 20, cpu 70 (%), gpu 70 (%)."),
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="HPA scale-down stabilisation window: how long load must stay low before pods go.",
    )

    @property
    def autoscaled(self) -> bool:
        """An HPA owns the replica count (a range, and not scaled to zero)."""
        return self.min_replicas >= 1 and self.max_replicas > self.min_replicas


# --------------------------------------------------------------------------- scheduling


class Toleration(_Model):
    """A Kubernetes toleration."""

    RULES = (
        Rule(f"!has(self.key) || self.key == '' || self.key.matches({cel_regex(LABEL_KEY_PATTERN)})",
             f"scheduling.tolerations[].key must be a label key ({KEY_WORDS})", ".key",
             lambda m: not m.key or _matches(LABEL_KEY_PATTERN, m.key)),
        Rule("self.operator == 'Exists' || (has(self.key) && self.key != '')",
             "scheduling.tolerations[]: a toleration without a key must use operator Exists", ".operator",
             lambda m: m.operator == "Exists" or bool(m.key)),
        Rule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "scheduling.tolerations[]: a toleration with operator Exists has no value", ".value",
             lambda m: m.operator != "Exists" or not m.value),
        Rule(f"!has(self.value) || self.value.matches({cel_regex(LABEL_VALUE_PATTERN)})",
             f"scheduling.tolerations[].value must be a label value ({VALUE_WORDS})", ".value",
             lambda m: _matches(LABEL_VALUE_PATTERN, m.value)),
        Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "scheduling.tolerations[].tolerationSeconds applies to effect NoExecute only",
             ".tolerationSeconds",
             lambda m: m.toleration_seconds is None or m.effect == "NoExecute"),
    )  # fmt: skip

    key: str | None = Field(
        default=None,
        max_length=LABEL_KEY_MAX,
        description="Taint key; empty with operator Exists matches all.",
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(
        default=None, max_length=LABEL_VALUE_MAX, description="Taint value (operator Equal)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )


class TopologySpread(_Model):
    """Spread of the pods across a topology domain (by default: across nodes)."""

    RULES = (
        Rule(f"self.topologyKey.matches({cel_regex(LABEL_KEY_PATTERN)})",
             f"scheduling.topologySpread.topologyKey must be a label key ({KEY_WORDS})", ".topologyKey",
             lambda m: _matches(LABEL_KEY_PATTERN, m.topology_key)),
    )  # fmt: skip

    enabled: bool = Field(default=True, description="Add a topologySpreadConstraint for the pods.")
    topology_key: str = Field(
        default="kubernetes.io/hostname",
        min_length=1,
        max_length=LABEL_KEY_MAX,
        description="Node label that defines the domains (e.g. kubernetes.io/hostname or a zone label).",
    )
    max_skew: int = Field(
        default=1, ge=1, description="Largest allowed difference in pod count between domains."
    )
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        default="ScheduleAnyway",
        description="ScheduleAnyway (a preference) or DoNotSchedule (a hard rule).",
    )


class Scheduling(_Model):
    """Where the pods may run."""

    RULES = (
        label_map_rule("nodeSelector", "scheduling.nodeSelector", values=True),
        name_rule("priorityClassName", "scheduling.priorityClassName"),
        name_rule("runtimeClassName", "scheduling.runtimeClassName"),
    )

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=MAP_MAX, description="Node labels the pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Tolerations; for GPU pods the operator adds '<GPU taint key> Exists NoSchedule' (the taint key "
            "is the operator's gpuTaintKey, nvidia.com/gpu by default, whatever gpuResource is requested)."
        ),
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: ObjectName | None = Field(default=None, description="PriorityClass of the pods.")
    runtime_class_name: ObjectName | None = Field(
        default=None, description="RuntimeClass of the pods (e.g. nvidia on clusters that need it)."
    )
    topology_spread: TopologySpread = Field(
        default_factory=TopologySpread, description="Spread of the pods across nodes (on by default)."
    )


# --------------------------------------------------------------------------- service


class Ingress(_Model):
    """An Ingress in front of the HTTP port."""

    RULES = (
        name_rule("className", "service.ingress.className"),
        name_rule("tlsSecret", "service.ingress.tlsSecret"),
    )

    host: str = Field(
        min_length=1,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Host name routed to the model.",
    )
    path: str = Field(default="/", pattern=r"^/.*$", description="Path prefix routed to the model.")
    class_name: ObjectName | None = Field(
        default=None, description="IngressClass; the cluster default when empty."
    )
    tls_secret: ObjectName | None = Field(
        default=None, description="Secret with the TLS certificate for host; plain HTTP when empty."
    )


class ServiceSpec(_Model):
    """The Service in front of the pods (and an optional Ingress)."""

    RULES = (
        Rule("self.grpcPort == 0 || self.grpcPort != self.httpPort",
             "service.httpPort and service.grpcPort must differ", ".grpcPort",
             lambda m: m.grpc_port == 0 or m.grpc_port != m.http_port),
        label_map_rule("annotations", "service.annotations", values=False),
    )  # fmt: skip

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    http_port: int = Field(
        default=8080, ge=1, le=65535, description="Service port for HTTP (inference REST API and /metrics)."
    )
    grpc_port: int = Field(
        default=8081, ge=0, le=65535, description="Service port for gRPC; 0 disables gRPC."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAP_MAX,
        description="Annotations of the Service (e.g. for a load balancer).",
    )
    ingress: Ingress | None = Field(default=None, description="Optional Ingress for the HTTP port.")


class Disruption(_Model):
    """Voluntary disruption budget (a PodDisruptionBudget exists when replicas can exceed 1)."""

    RULES = (
        Rule("string(self.minAvailable).matches('^([0-9]+|([0-9]|[1-9][0-9]|100)%)$')",
             "disruption.minAvailable as a percentage must be at most 100%", ".minAvailable",
             lambda m: isinstance(m.min_available, int) or int(m.min_available[:-1]) <= 100),
    )  # fmt: skip

    min_available: IntOrPercent = Field(
        default=1, description="Pods that must stay available during voluntary disruptions (count or %)."
    )


class Monitoring(_Model):
    """Prometheus scraping."""

    pod_monitor: bool = Field(
        default=True,
        description="Create a PodMonitor when the monitoring.coreos.com API exists in the cluster.",
    )


class PodTemplate(_Model):
    """Small overrides of the pod template."""

    RULES = (
        label_map_rule("labels", "podTemplate.labels", values=True),
        label_map_rule("annotations", "podTemplate.annotations", values=False),
        name_rule("serviceAccountName", "podTemplate.serviceAccountName"),
        Rule("!has(self.imagePullSecrets) || "
             f"self.imagePullSecrets.all(s, s.matches({cel_regex(SUBDOMAIN_PATTERN)}))",
             f"podTemplate.imagePullSecrets must be Secret names, each {NAME_WORDS}", ".imagePullSecrets",
             lambda m: all(_matches(SUBDOMAIN_PATTERN, n) for n in m.image_pull_secrets)),
    )  # fmt: skip

    labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=MAP_MAX, description="Extra pod labels."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=MAP_MAX, description="Extra pod annotations."
    )
    service_account_name: ObjectName | None = Field(
        default=None, description="ServiceAccount of the pods (e.g. for workload identity to S3)."
    )
    image_pull_secrets: list[ObjectName] = Field(
        default_factory=list, max_length=16, description="Names of Secrets used to pull the server image."
    )


# --------------------------------------------------------------------------- spec / status


def _count(value: int | str) -> int | None:
    return value if isinstance(value, int) else None


class ModelDeploymentSpec(_Model):
    """Desired state of a ModelDeployment: one model served by a scaled set of server pods."""

    RULES = (
        Rule("!string(self.disruption.minAvailable).matches('^[0-9]+$') "
             "|| int(string(self.disruption.minAvailable)) <= self.scaling.maxReplicas",
             "disruption.minAvailable must not exceed scaling.maxReplicas: a budget for more pods than can "
             "exist is never met", ".disruption.minAvailable",
             lambda m: (_count(m.disruption.min_available) or 0) <= m.scaling.max_replicas),
        Rule("!self.runtime.requireBatching || !self.model.uri.startsWith('pvc://')",
             "runtime.requireBatching is checked when the model is fetched, and a pvc:// model is mounted, "
             "not fetched", ".runtime.requireBatching",
             lambda m: not m.runtime.require_batching or not m.model.uri.startswith("pvc://")),
    )  # fmt: skip

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(default_factory=Runtime, description="Server image and runtime options.")
    resources: Resources = Field(default_factory=Resources, description="CPU, memory and GPU of each pod.")
    scaling: Scaling = Field(default_factory=Scaling, description="Replica count and autoscaling.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Placement of the pods.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="Service and optional Ingress.")
    disruption: Disruption = Field(default_factory=Disruption, description="PodDisruptionBudget settings.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Prometheus scraping.")
    pod_template: PodTemplate = Field(default_factory=PodTemplate, description="Pod template overrides.")


ConditionType = Literal["Ready", "Progressing", "Degraded", "MetricsAvailable", "AcceleratorReady"]


class Condition(_Model):
    """A status condition (the metav1.Condition shape)."""

    type: str = Field(
        min_length=1, description="Ready, Progressing, Degraded, MetricsAvailable or AcceleratorReady."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None,
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed for."
    )


class TensorSignature(_Model):
    """One input or output of the served model."""

    model_config = ConfigDict(extra="ignore")  # parsed from a pod's message: newer fields are dropped

    name: str = Field(max_length=256, description="Tensor name.")
    datatype: str = Field(max_length=32, description="V2 datatype (FP32, INT64, BYTES, ...).")
    shape: list[int] = Field(max_length=64, description="Dimensions; -1 is dynamic.")


class ModelFileSignature(_Model):
    """What one ONNX file of the model declares, as read by ``modelserve fetch --check``."""

    model_config = ConfigDict(extra="ignore")

    file: str = Field(max_length=256, description="The file, relative to the fetched model.")
    sha256: str = Field(max_length=64, description="SHA-256 of the file.")
    opset: int = Field(description="Default-domain (ai.onnx) opset.")
    inputs: list[TensorSignature] = Field(default_factory=list, description="Inputs clients feed.")
    outputs: list[TensorSignature] = Field(default_factory=list, description="Outputs.")
    truncated: bool | None = Field(
        default=None, description="True: tensors were left out to fit the pod's 4 KiB termination message."
    )
    input_count: int | None = Field(default=None, description="Inputs in the file (when truncated).")
    output_count: int | None = Field(default=None, description="Outputs in the file (when truncated).")


class ModelSignature(_Model):
    """The served model's signature, reported by a pod's fetch init container."""

    model_config = ConfigDict(extra="ignore")

    uri: str = Field(default="", description="The spec's model.uri it was read for (without query).")
    models: list[ModelFileSignature] = Field(default_factory=list, description="Each ONNX file checked.")
    truncated: bool | None = Field(
        default=None, description="True: files were left out to fit the pod's 4 KiB termination message."
    )
    model_count: int | None = Field(default=None, description="Files checked (when truncated).")


class ModelDeploymentStatus(_Model):
    """Observed state, written by the operator from the children."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last reconciled."
    )
    model: str | None = Field(default=None, description="Name of the served model (the MODEL column).")
    replicas: int = Field(default=0, description="Pods of the current Deployment (scale subresource).")
    ready_replicas: int = Field(default=0, description="Pods that pass the readiness probe.")
    url: str | None = Field(default=None, description="Cluster-local inference URL of the model.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    provider: str | None = Field(
        default=None,
        description=(
            "Execution provider the ready pods actually run (tensorrt, cuda, cpu; several joined by ',' "
            "when pods differ), from each pod's model metadata (the PROVIDER column)."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded, MetricsAvailable and AcceleratorReady conditions.",
    )
    model_signature: ModelSignature | None = Field(
        default=None,
        description="Inputs, outputs, opset and sha256 of the served model (absent for pvc:// models).",
    )


class ModelDeployment(_Model):
    """A ModelDeployment as typed data (metadata kept loose; the API server owns it)."""

    api_version: str = Field(default=API_VERSION, description="serving.modelserve.io/v1alpha1")
    kind: str = Field(default=KIND, description="ModelDeployment")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Observed state.")


def parse_spec(spec: Any) -> ModelDeploymentSpec:
    """Validate a ``spec`` mapping (camelCase, as stored) into the typed model.

    Raises ``pydantic.ValidationError`` with the same messages the API server's CEL rules use.
    """
    return ModelDeploymentSpec.model_validate(dict(spec or {}))


def dump_spec(spec: ModelDeploymentSpec) -> dict[str, Any]:
    """The spec as the API server would store it (camelCase, None fields left out)."""
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")

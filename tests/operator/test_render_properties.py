"""Property tests: whatever valid ModelDeployment a user writes, every rendered object

- validates offline against the Kubernetes 1.35 OpenAPI schemas (kubernetes-validate, strict:
  unknown fields are errors), and
- meets the Pod Security "restricted" profile (the checker below implements the published
  baseline + restricted controls for what a pod template can contain), and
- keeps the invariants the reconciler relies on (selectors match the pods, owner references,
  HPA present iff the Deployment leaves ``replicas`` out, GPU toleration, grace period).

The checker itself is tested on pods that break each control, so it can fail.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserve_operator.api import parse_spec
from modelserve_operator.config import OperatorConfig
from modelserve_operator.render import render_children
from modelserve_operator.render.deployment import PRE_STOP_SECONDS

K8S_VERSION = "1.35.0"
GOLDEN = Path(__file__).parent / "golden"
CONFIG = OperatorConfig()

# --------------------------------------------------------------------------- restricted profile

ALLOWED_VOLUME_SOURCES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(
    pod_spec: Mapping[str, Any], pod_annotations: Mapping[str, str] | None = None
) -> list[str]:
    """Every Pod Security Standards (restricted, latest) control a pod spec breaks, as text.

    Also enforces this project's extra rule: a read-only root filesystem in every container.
    """
    out: list[str] = []
    psc = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            out.append(f"{field} must not be true")
    for volume in pod_spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            out.append(f"volume {volume.get('name')}: source {sorted(sources)} not allowed")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl.get('name')} not allowed")
    for key, value in (pod_annotations or {}).items():
        if (
            key.startswith("container.apparmor.security.beta.kubernetes.io/")
            and value
            not in (
                "runtime/default",
                "",
            )
            and not value.startswith("localhost/")
        ):
            out.append(f"AppArmor annotation {key}={value}")
    pod_nonroot = psc.get("runAsNonRoot")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser must not be 0")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"pod seccompProfile {pod_seccomp} not allowed")
    if (psc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append("pod AppArmor Unconfined")
    out += _selinux(psc.get("seLinuxOptions"), "pod")
    containers = [("container", c) for c in pod_spec.get("containers") or []]
    containers += [("initContainer", c) for c in pod_spec.get("initContainers") or []]
    containers += [("ephemeralContainer", c) for c in pod_spec.get("ephemeralContainers") or []]
    if not containers:
        out.append("no containers")
    for kind, c in containers:
        where = f"{kind} {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{where}: capabilities may add only NET_BIND_SERVICE")
        nonroot = sc.get("runAsNonRoot", pod_nonroot)
        if nonroot is not True:
            out.append(f"{where}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost (is {seccomp})")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: AppArmor Unconfined")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount must be Default")
        out += _selinux(sc.get("seLinuxOptions"), where)
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']}")
        if sc.get("readOnlyRootFilesystem") is not True and kind != "ephemeralContainer":
            out.append(f"{where}: readOnlyRootFilesystem must be true (project rule)")
    return out


def _selinux(options: Mapping[str, Any] | None, where: str) -> list[str]:
    if not options:
        return []
    out = []
    if options.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}: SELinux type {options['type']}")
    if options.get("user") or options.get("role"):
        out.append(f"{where}: SELinux user/role must be unset")
    return out


def _golden_deployment() -> dict[str, Any]:
    md = yaml.safe_load((GOLDEN / "gpu-autoscale.input.yaml").read_text())
    deployment = render_children(md, CONFIG).find("Deployment")
    assert deployment is not None
    return deployment


BREAKERS = {
    "hostNetwork": lambda p: p.update(hostNetwork=True),
    "hostPath volume": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "privileged": lambda p: p["containers"][0]["securityContext"].update(privileged=True),
    "escalation": lambda p: p["initContainers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "caps add": lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    "caps drop": lambda p: p["containers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
    "root user": lambda p: p["containers"][0]["securityContext"].update(runAsUser=0),
    "nonroot": lambda p: (
        p["securityContext"].pop("runAsNonRoot"),
        p["initContainers"][0]["securityContext"].pop("runAsNonRoot"),
    ),
    "seccomp": lambda p: (
        p["securityContext"].pop("seccompProfile"),
        p["containers"][0]["securityContext"].pop("seccompProfile"),
    ),
    "unconfined": lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}),
    "hostPort": lambda p: p["containers"][0]["ports"][0].update(hostPort=80),
    "sysctl": lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "writable root": lambda p: p["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False),
    "selinux": lambda p: p["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
}


def test_restricted_checker_accepts_the_rendered_pod() -> None:
    template = _golden_deployment()["spec"]["template"]
    assert restricted_violations(template["spec"], template["metadata"]["annotations"]) == []


@pytest.mark.parametrize("name", sorted(BREAKERS))
def test_restricted_checker_catches(name: str) -> None:
    pod = copy.deepcopy(_golden_deployment()["spec"]["template"]["spec"])
    BREAKERS[name](pod)
    assert restricted_violations(pod), f"the checker missed: {name}"


# --------------------------------------------------------------------------- strategies

dns_label = st.from_regex(r"\A[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,8})?\Z")
file_name = st.from_regex(r"\A[a-z][a-z0-9_]{0,12}\.onnx\Z")
# Quantities in increasing order, in the spellings users write (ints, milli, decimal, binary suffixes).
CPU_LADDER: list[int | str] = ["100m", "250m", "500m", 1, "1.5", 2, "4", 16]
MEMORY_LADDER: list[int | str] = [134217728, "256Mi", "512M", "1Gi", "1.5Gi", "2Gi", "4G", "8Gi"]
DEFAULT_REQUEST = {"cpu": "500m", "memory": "1Gi"}
label_value = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?\Z")
label_key = st.sampled_from(["team", "example.com/cost-center", "tier", "app.example.com/owner"])


@st.composite
def uris(draw: st.DrawFn) -> tuple[str, str | None, str | None]:
    """(uri, sha256, credentialsSecret) consistent with the CEL rules."""
    scheme = draw(st.sampled_from(["https", "http", "s3", "pvc", "file", "path"]))
    name = draw(file_name)
    sha = draw(st.none() | st.from_regex(r"\A[a-f0-9]{64}\Z"))
    if scheme in ("http", "https"):
        return f"{scheme}://models.example.com/{draw(dns_label)}/{name}", sha, None
    if scheme == "s3":
        return f"s3://{draw(dns_label)}/{draw(dns_label)}/{name}", sha, draw(st.none() | dns_label)
    if scheme == "pvc":
        return f"pvc://{draw(dns_label)}/{draw(dns_label)}/{name}", None, None
    if scheme == "file":
        return f"file:///opt/models/{name}", sha, None
    return f"/opt/models/{name}", sha, None


def _optional(draw: st.DrawFn, spec: dict[str, Any], key: str, strategy: st.SearchStrategy[Any]) -> None:
    value = draw(st.none() | strategy)
    if value is not None:
        spec[key] = value


@st.composite
def model_deployments(draw: st.DrawFn) -> dict[str, Any]:
    uri, sha, secret = draw(uris())
    model: dict[str, Any] = {"uri": uri}
    if sha:
        model["sha256"] = sha
    if secret:
        model["credentialsSecret"] = secret
    _optional(draw, model, "name", st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,20}[A-Za-z0-9]\Z"))
    _optional(draw, model, "version", st.from_regex(r"\A[a-z0-9]{1,6}\Z"))

    spec: dict[str, Any] = {"model": model}
    runtime: dict[str, Any] = {}
    _optional(draw, runtime, "image", st.just("registry.example.com/custom/server:1"))
    _optional(draw, runtime, "providers", st.sampled_from(["auto", "cpu", "cuda,cpu", "tensorrt,cuda,cpu"]))
    _optional(draw, runtime, "intraOpThreads", st.integers(1, 64))
    _optional(draw, runtime, "maxBatchSize", st.integers(1, 4096))
    _optional(draw, runtime, "maxBatchDelayMs", st.one_of(st.integers(0, 100), st.floats(0, 100)))
    _optional(draw, runtime, "drainSeconds", st.integers(0, 3600))
    _optional(
        draw, runtime, "args", st.lists(st.sampled_from(["--max-request-bytes", "1048576"]), max_size=2)
    )
    # value or valueFrom, never both (the Kubernetes EnvVar rule the CRD now enforces too).
    env = st.fixed_dictionaries({"name": st.from_regex(r"\A[A-Z][A-Z0-9_]{0,10}\Z")}, optional={
        "value": st.text("abc 123", max_size=5),
    }) | st.fixed_dictionaries({
        "name": st.from_regex(r"\A[A-Z][A-Z0-9_]{0,10}\Z"),
        "valueFrom": st.just({"secretKeyRef": {"name": "s", "key": "k"}}),
    })
    _optional(draw, runtime, "env", st.lists(env, max_size=3, unique_by=lambda e: e["name"]))
    if runtime:
        spec["runtime"] = runtime

    resources: dict[str, Any] = {}
    _optional(draw, resources, "gpu", st.integers(0, 8))
    _optional(
        draw,
        resources,
        "gpuResource",
        st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "nvidia.com/mig-1g.10gb"]),
    )
    # Requests never above limits (the model rejects that; tested in test_crd.py).
    for name, ladder in (("cpu", CPU_LADDER), ("memory", MEMORY_LADDER)):
        low_i = draw(st.integers(0, len(ladder) - 1))
        high_i = draw(st.integers(low_i, len(ladder) - 1))
        if draw(st.booleans()):
            resources.setdefault("requests", {})[name] = ladder[low_i]
        if draw(st.booleans()) and (
            name in resources.get("requests", {}) or high_i >= ladder.index(DEFAULT_REQUEST[name])
        ):
            resources.setdefault("limits", {})[name] = ladder[high_i]
    if resources:
        spec["resources"] = resources

    low = draw(st.integers(0, 5))
    high = draw(st.integers(max(1, low), 12))
    metric = draw(st.sampled_from(["inflight", "rps", "cpu", "gpu"]))
    scaling: dict[str, Any] = {"minReplicas": low, "maxReplicas": high, "metric": metric}
    _optional(draw, scaling, "target", st.floats(0.01, 1000) if metric != "cpu" else st.integers(1, 100))
    _optional(draw, scaling, "scaleDownStabilizationSeconds", st.integers(0, 3600))
    spec["scaling"] = scaling

    sched: dict[str, Any] = {}
    _optional(draw, sched, "nodeSelector", st.dictionaries(label_key, label_value, max_size=2))
    toleration = st.fixed_dictionaries(
        {"key": st.sampled_from(["dedicated", "example.com/pool"])},
        optional={"operator": st.just("Exists"), "effect": st.sampled_from(["NoSchedule", "NoExecute"])},
    )
    _optional(draw, sched, "tolerations", st.lists(toleration, max_size=2))
    _optional(draw, sched, "priorityClassName", st.just("high"))
    _optional(draw, sched, "runtimeClassName", st.just("nvidia"))
    _optional(
        draw,
        sched,
        "topologySpread",
        st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.booleans(),
                "topologyKey": st.just("topology.kubernetes.io/zone"),
                "maxSkew": st.integers(1, 3),
                "whenUnsatisfiable": st.sampled_from(["ScheduleAnyway", "DoNotSchedule"]),
            },
        ),
    )
    if sched:
        spec["scheduling"] = sched

    http_port = draw(st.integers(1, 65535))
    grpc_port = draw(st.just(0) | st.integers(1, 65535).filter(lambda p: p != http_port))
    service: dict[str, Any] = {"httpPort": http_port, "grpcPort": grpc_port}
    _optional(draw, service, "type", st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    _optional(
        draw, service, "annotations", st.dictionaries(label_key, st.text("ab1", max_size=4), max_size=2)
    )
    ingress = st.fixed_dictionaries(
        {"host": st.builds(lambda a: f"{a}.example.com", dns_label)},
        optional={
            "path": st.sampled_from(["/", "/v2"]),
            "className": st.just("nginx"),
            "tlsSecret": dns_label,
        },
    )
    _optional(draw, service, "ingress", ingress)
    spec["service"] = service
    # An integer budget above maxReplicas is refused at apply (it could never be met): draw within it.
    _optional(
        draw, spec, "disruption",
        st.fixed_dictionaries({"minAvailable": st.integers(0, min(3, high)) | st.just("50%")}),
    )
    _optional(draw, spec, "monitoring", st.fixed_dictionaries({"podMonitor": st.booleans()}))
    _optional(
        draw,
        spec,
        "podTemplate",
        st.fixed_dictionaries(
            {},
            optional={
                "labels": st.dictionaries(label_key, label_value, max_size=2),
                "annotations": st.dictionaries(label_key, st.text("xy", max_size=3), max_size=2),
                "serviceAccountName": dns_label,
                "imagePullSecrets": st.lists(dns_label, max_size=2),
            },
        ),
    )
    return {
        "apiVersion": "serving.modelserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": draw(dns_label), "namespace": draw(dns_label), "uid": "u-1", "generation": 1},
        "spec": spec,
    }


# --------------------------------------------------------------------------- properties


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_objects(md: dict[str, Any], podmonitor_api: bool) -> None:
    spec = parse_spec(md["spec"])
    out = render_children(md, CONFIG, podmonitor_api=podmonitor_api)
    kinds = [o["kind"] for o in out.apply]
    assert len(kinds) == len(set(kinds))
    for obj in out.apply:
        if obj["kind"] == "PodMonitor":
            continue  # no schema in kubernetes-validate; checked below by shape
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        owners = obj["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "serving.modelserve.io/v1alpha1",
                "kind": "ModelDeployment",
                "name": md["metadata"]["name"],
                "uid": md["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert obj["metadata"]["namespace"] == md["metadata"]["namespace"]
    deployment = out.find("Deployment")
    assert deployment is not None
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    assert restricted_violations(template["spec"], template["metadata"]["annotations"]) == []
    assert _matches(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    service = out.find("Service")
    assert service is not None and _matches(service["spec"]["selector"], pod_labels)
    container_ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports

    hpa = out.find("HorizontalPodAutoscaler")
    assert (hpa is not None) == spec.scaling.autoscaled
    assert ("replicas" in deployment["spec"]) == (hpa is None)
    if hpa is None:
        assert deployment["spec"]["replicas"] == spec.scaling.min_replicas
        assert ("autoscaling/v2", "HorizontalPodAutoscaler", md["metadata"]["name"]) in out.delete
    pdb = out.find("PodDisruptionBudget")
    if pdb is not None:
        assert spec.scaling.max_replicas > 1
        assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    podmonitor = out.find("PodMonitor")
    assert (podmonitor is not None) == (podmonitor_api and spec.monitoring.pod_monitor)
    if podmonitor is not None:
        assert _matches(podmonitor["spec"]["selector"]["matchLabels"], pod_labels)
        assert podmonitor["spec"]["podMetricsEndpoints"][0]["port"] in container_ports
    if not podmonitor_api:
        assert all(kind != "PodMonitor" for _, kind, _ in out.delete)
    assert (out.find("Ingress") is not None) == (spec.service.ingress is not None)
    applied = {o["kind"] for o in out.apply}
    assert not applied & {kind for _, kind, _ in out.delete}

    pod = template["spec"]
    server = pod["containers"][0]
    gpu_resource = spec.resources.gpu_resource or CONFIG.gpu_resource
    if spec.resources.gpu:
        assert server["resources"]["limits"][gpu_resource] == str(spec.resources.gpu)
        assert {"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert gpu_resource not in server["resources"].get("limits", {})
    assert pod["terminationGracePeriodSeconds"] > PRE_STOP_SECONDS + spec.runtime.drain_seconds
    assert ("initContainers" in pod) == (not spec.model.uri.startswith("pvc://"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(md=model_deployments(), podmonitor_api=st.booleans())
def test_every_rendered_object_is_valid_and_restricted(md: dict[str, Any], podmonitor_api: bool) -> None:
    check_objects(md, podmonitor_api)


def _known_inputs() -> dict[str, dict[str, Any]]:
    """The golden inputs and the ModelDeployments in manifests/samples (the ones users copy)."""
    found = {p.name: yaml.safe_load(p.read_text()) for p in sorted(GOLDEN.glob("*.input.yaml"))}
    for path in sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelDeployment":
                doc.setdefault("metadata", {}).setdefault("uid", "sample-uid")
                doc["metadata"].setdefault("namespace", "default")
                found[f"{path.name}:{doc['metadata']['name']}"] = doc
    return found


KNOWN_INPUTS = _known_inputs()


@pytest.mark.parametrize("case", sorted(KNOWN_INPUTS))
@pytest.mark.parametrize("podmonitor_api", [False, True])
def test_known_inputs_render_valid_objects(case: str, podmonitor_api: bool) -> None:
    check_objects(KNOWN_INPUTS[case], podmonitor_api)


def test_validation_catches_a_bad_object() -> None:
    """kubernetes-validate in strict mode really rejects an unknown field (so the tests above can fail)."""
    deployment = _golden_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)

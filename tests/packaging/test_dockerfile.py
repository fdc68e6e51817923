"""The Dockerfile's contract: the three targets, a non-root final user, no build tools or caches in
the final stages, pinned bases, OCI labels, ENTRYPOINT ["modelserve"], and each image side
installing the package with the extras CI installs (Makefile EXTRAS), so images run the code the
tests ran. There is no Docker engine here; the build itself is not exercised."""

from __future__ import annotations

import re
import tomllib

import pytest
from tests.packaging.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
FINAL_TARGETS = ("operator", "server", "server-gpu")
# Which extras each image side must carry; dev/test extras never go into images.
EXPECTED_EXTRAS = {
    "operator-build": {"operator"},
    "server-build": {"server", "s3"},
    "server-gpu-build": {"server", "s3", "gpu"},
}


def _stages() -> dict[str, str]:
    """stage name -> its text (FROM line to the next FROM)."""
    parts = re.split(r"(?m)^(?=FROM )", DOCKERFILE)
    stages = {}
    for part in parts:
        match = re.match(r"FROM \S+ AS (\S+)", part)
        if match:
            stages[match.group(1)] = part
    return stages


def _args() -> dict[str, str]:
    return dict(re.findall(r"(?m)^ARG (\w+)=(\S+)", DOCKERFILE))


def _makefile_extras() -> set[str]:
    match = re.search(r"(?m)^EXTRAS \?= (\S+)", (ROOT / "Makefile").read_text())
    assert match, "Makefile has no EXTRAS"
    return set(match.group(1).split(","))


def test_final_targets_exist() -> None:
    stages = _stages()
    for target in FINAL_TARGETS:
        assert target in stages, f"no '{target}' target"


@pytest.mark.parametrize("stage", sorted(EXPECTED_EXTRAS))
def test_image_installs_the_package_with_the_ci_extras(stage: str) -> None:
    text = _stages()[stage]
    installs = re.findall(r'pip install "/src\[([a-z0-9,]+)\]"', text)
    assert len(installs) == 1, f"{stage}: expected one install of the source tree with extras, got {installs}"
    extras = set(installs[0].split(","))
    assert extras == EXPECTED_EXTRAS[stage]
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert extras <= declared, f"{stage}: extras {extras - declared} are not in pyproject.toml"
    # CI (make test / .ci/run) installs the Makefile's EXTRAS: every runtime extra an image carries is
    # tested there, except `gpu` (onnxruntime-gpu), which needs CUDA and replaces onnxruntime.
    assert extras - {"gpu"} <= _makefile_extras(), f"{stage}: extras not installed by CI"
    assert "dev" not in extras
    assert f"# extras: {installs[0]}" in text, f"{stage}: the '# extras:' comment disagrees with the install"


def test_gpu_image_swaps_onnxruntime_for_onnxruntime_gpu() -> None:
    text = _stages()["server-gpu-build"]
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in text
    assert 'pip install --no-deps "onnxruntime-gpu==${ORT_GPU_VERSION}"' in text
    assert "CUDAExecutionProvider" in text
    assert _args()["CUDA_IMAGE"].startswith("nvidia/cuda:") and "cudnn-runtime" in _args()["CUDA_IMAGE"]


def test_base_images_are_pinned() -> None:
    for name, value in _args().items():
        if name.endswith("_IMAGE"):
            _, _, tag = value.partition(":")
            assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}={value} is not pinned"
    for line in re.findall(r"(?m)^FROM (\S+)", DOCKERFILE):
        assert line.startswith("${") or line in _stages(), f"FROM {line}: use a pinned ARG or a stage"


@pytest.mark.parametrize("target", FINAL_TARGETS)
def test_final_stage_is_non_root_with_the_modelserve_entrypoint(target: str) -> None:
    stages = _stages()
    text = stages[target]
    # Follow the parent stage (operator/server build FROM python-runtime).
    parent = re.match(r"FROM (\S+) AS", text)
    assert parent
    chain = text + (stages.get(parent.group(1), ""))
    users = re.findall(r"(?m)^USER (\S+)", text)
    assert users and users[-1] == "65532:65532", f"{target}: last USER is {users}"
    assert 'ENTRYPOINT ["modelserve"]' in text
    assert "org.opencontainers.image.title" in text
    assert "org.opencontainers.image.source" in chain and "org.opencontainers.image.version" in chain
    # Only the venv comes over from a builder: no pip cache, no source tree, no compilers installed.
    for copied in re.findall(r"(?m)^COPY --from=(\S+) (\S+)", text):
        assert copied[1] == "/opt/venv", f"{target}: copies {copied[1]} from {copied[0]}"
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", chain)
    assert "apt-get install" not in chain or "rm -rf /var/lib/apt/lists/*" in chain


def test_builders_leave_no_pip_cache() -> None:
    assert "PIP_NO_CACHE_DIR=1" in DOCKERFILE
    for install in re.findall(r"(?m)^\s*(?:RUN|&&) .*pip install[^\n]*", DOCKERFILE):
        assert "--cache-dir" not in install


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "server/", "operator/"}
    for path in re.findall(r"(?m)^COPY (?!--from)(.+) \S+$", DOCKERFILE):
        for item in path.split():
            assert item.rstrip("/") + ("/" if (ROOT / item).is_dir() else "") in allowed, item


# --------------------------------------------------------------------------------------- TensorRT
#: The TensorRT libraries onnxruntime-gpu's TensorRT EP is linked against (`readelf -d` of
#: onnxruntime/capi/libonnxruntime_providers_tensorrt.so in the 1.31.1 wheel: NEEDED entries).
TRT_EP_NEEDS = ("libnvinfer.so.10", "libnvonnxparser.so.10")
TRT_LINK = "/opt/venv/tensorrt_libs"


def _env_value(stage_text: str, name: str) -> str | None:
    """The value an ENV instruction of the stage gives `name` (the last one wins)."""
    value = None
    for block in re.findall(r"(?ms)^ENV (.*?)(?<!\\)\n", stage_text):
        for key, val in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            if key == name:
                value = val
    return value


def test_tensorrt_wheel_pin_is_the_same_in_image_and_gpu_extra() -> None:
    from packaging.requirements import Requirement

    args = _args()
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pins = {r.name: r for r in map(Requirement, gpu)}
    assert args["TRT_PACKAGE"] in pins, f"the gpu extra does not carry {args['TRT_PACKAGE']}"
    assert str(pins[args["TRT_PACKAGE"]].specifier) == f"=={args['TRT_VERSION']}"
    # The wheel's CUDA major (tensorrt-cu13-libs) is the base image's CUDA major (nvidia/cuda:13.x).
    cuda_major = re.search(r"nvidia/cuda:(\d+)\.", args["CUDA_IMAGE"])
    assert cuda_major and f"-cu{cuda_major.group(1)}-" in args["TRT_PACKAGE"]
    # The TensorRT major is the one whose sonames the EP needs.
    assert all(lib.endswith("." + args["TRT_VERSION"].split(".")[0]) for lib in TRT_EP_NEEDS)


def test_gpu_image_would_resolve_libnvinfer_for_the_tensorrt_ep() -> None:
    build, final = _stages()["server-gpu-build"], _stages()["server-gpu"]
    # The loader's search path names the link in both the builder (for its check) and the image.
    for text in (build, final):
        path = _env_value(text, "LD_LIBRARY_PATH")
        assert path and TRT_LINK in path.split(":"), f"LD_LIBRARY_PATH={path}"
    # The link points at the TensorRT wheel's tensorrt_libs inside the venv's own site-packages ...
    assert 'site="$(python -c \'import sysconfig; print(sysconfig.get_paths()["purelib"])\')"' in build
    assert f'ln -s "${{site}}/tensorrt_libs" {TRT_LINK}' in build
    # ... and the build fails unless the EP's libraries load through it and the EP lib links fully.
    for lib in TRT_EP_NEEDS:
        assert f"ctypes.CDLL('{lib}')" in build
    assert "ldd \"${site}/onnxruntime/capi/libonnxruntime_providers_tensorrt.so\"" in build
    assert "'TensorrtExecutionProvider' in o.get_available_providers()" in build
    # The venv (with the link inside it) is what the image gets.
    assert "COPY --from=server-gpu-build /opt/venv /opt/venv" in final
    # The link is created after the TensorRT wheel is installed by the `gpu` extra, in the same RUN.
    run = build[build.index('RUN pip install "/src[server,s3,gpu]"'):]
    assert run.index("pip install") < run.index("ln -s") < run.index("ctypes.CDLL")

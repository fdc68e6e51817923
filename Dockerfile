# modelserve container images. One Dockerfile, three final targets:
#
#   docker build --target operator   -t REGISTRY/modelserve-operator:TAG   .
#   docker build --target server     -t REGISTRY/modelserve-server:TAG     .
#   docker build --target server-gpu -t REGISTRY/modelserve-server-gpu:TAG .
#
# Each side installs the package with the same extras that CI installs (see the Makefile's EXTRAS;
# tests/packaging/test_dockerfile.py keeps them in step): the operator image carries no ONNX Runtime,
# the server images carry no kopf. Builder stages hold pip and its caches; the final stages copy only
# the virtual environment, run as a fixed non-root uid (65532, what the chart and the operator's pod
# template expect) and start with ENTRYPOINT ["modelserve"].
#
# Base images are pinned by tag. Pin them by digest in your own registry mirror when you build
# for production (digests cannot be resolved on the machine that wrote this file).

# python:3.11.13-slim-bookworm (Debian 12, no compilers). The package needs python >= 3.11.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# onnxruntime-gpu 1.31 is built for CUDA 13 and cuDNN 9: keep ORT_GPU_VERSION and this base in step.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1
# TensorRT for the TensorRT EP, from its PyPI wheel. What this onnxruntime-gpu build needs, read from the
# wheel itself: onnxruntime/capi/build_and_package_info.py says cuda_version '13.0', and
# libonnxruntime_providers_tensorrt.so is linked against libnvinfer.so.10 and libnvonnxparser.so.10
# (TensorRT 10). ONNX Runtime's own CUDA 13 build environment uses TensorRT 10.13.3.9
# (tools/ci_build/github/windows/setup_env_cuda13.bat), the version pinned here and in pyproject's
# `gpu` extra (tests/packaging/test_dockerfile.py keeps the two equal). Change all of them together.
ARG TRT_PACKAGE=tensorrt-cu13-libs
ARG TRT_VERSION=10.13.3.9
ARG VERSION=0.1.0
ARG REVISION=unknown
# Where the source lives, for the org.opencontainers.image.source label (pass --build-arg SOURCE_URL=...).
ARG SOURCE_URL=""

# ---------------------------------------------------------------------------------------------
# Source: only what the wheel build needs (see .dockerignore), shared by every builder.
FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY operator ./operator

# ---------------------------------------------------------------------------------------------
# CPU builders: a virtual environment in /opt/venv, installed from the source tree with the
# side's extras, then copied whole into the final stage.
FROM ${PYTHON_IMAGE} AS python-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY --from=source /src /src

FROM python-builder AS operator-build
# extras: operator
RUN pip install "/src[operator]" \
    && modelserve --help >/dev/null

FROM python-builder AS server-build
# extras: server,s3
RUN pip install "/src[server,s3]" \
    && python -c "import onnxruntime" \
    && modelserve --help >/dev/null

# ---------------------------------------------------------------------------------------------
# GPU builder: Ubuntu's python3 on the CUDA base, so the venv's interpreter exists in the final
# stage too. The `gpu` extra adds onnxruntime-gpu next to the `server` extra's onnxruntime; both
# wheels ship the same `onnxruntime` import package, so both are removed and onnxruntime-gpu is
# put back alone (same pinned version, no dependency changes).
FROM ${CUDA_IMAGE} AS server-gpu-build
ARG ORT_GPU_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu's archive drops superseded package versions, so exact apt pins would break rebuilds;
# the base image tag pins the Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
COPY --from=source /src /src
# The TensorRT wheel puts libnvinfer.so.10 & co. in site-packages/tensorrt_libs, which no loader searches:
# /opt/venv/tensorrt_libs links to it (whatever the python minor) and LD_LIBRARY_PATH names the link.
ENV LD_LIBRARY_PATH=/opt/venv/tensorrt_libs
# extras: server,s3,gpu
RUN pip install "/src[server,s3,gpu]" "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && pip uninstall -y onnxruntime onnxruntime-gpu \
    && pip install --no-deps "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()" \
    && python -c "import onnxruntime as o; assert 'TensorrtExecutionProvider' in o.get_available_providers()" \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && ln -s "${site}/tensorrt_libs" /opt/venv/tensorrt_libs \
    && python -c "import ctypes; ctypes.CDLL('libnvinfer.so.10'); ctypes.CDLL('libnvonnxparser.so.10')" \
    && ! ldd "${site}/onnxruntime/capi/libonnxruntime_providers_tensorrt.so" | grep -E 'nv(infer|onnxparser).*not found' \
    && modelserve --help >/dev/null

# ---------------------------------------------------------------------------------------------
# Final stages.
FROM ${PYTHON_IMAGE} AS python-runtime
ARG VERSION
ARG REVISION
ARG SOURCE_URL
LABEL org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="modelserve" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
RUN groupadd --gid 65532 modelserve \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin modelserve
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

FROM python-runtime AS operator
LABEL org.opencontainers.image.title="modelserve-operator" \
      org.opencontainers.image.description="modelserve Kubernetes operator: reconciles ModelDeployments"
COPY --from=operator-build /opt/venv /opt/venv
USER 65532:65532
# 8080: kopf liveness endpoint (/healthz), 9090: operator metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["modelserve"]
CMD ["operator"]

FROM python-runtime AS server
LABEL org.opencontainers.image.title="modelserve-server" \
      org.opencontainers.image.description="modelserve inference server (Open Inference Protocol V2, ONNX Runtime, CPU)"
COPY --from=server-build /opt/venv /opt/venv
USER 65532:65532
# 8080: HTTP/REST + /metrics, 8081: gRPC.
EXPOSE 8080 8081
ENTRYPOINT ["modelserve"]
CMD ["serve", "--model-repository", "/models"]

FROM ${CUDA_IMAGE} AS server-gpu
ARG VERSION
ARG REVISION
ARG SOURCE_URL
LABEL org.opencontainers.image.title="modelserve-server-gpu" \
      org.opencontainers.image.description="modelserve inference server (Open Inference Protocol V2, ONNX Runtime, CUDA)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="modelserve" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# The venv's interpreter is Ubuntu's python3; nothing else from apt (no pip, no compilers).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 modelserve \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin modelserve
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/tensorrt_libs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=server-gpu-build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["modelserve"]
CMD ["serve", "--providers", "cuda,cpu", "--model-repository", "/models"]

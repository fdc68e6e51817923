#!/usr/bin/env bash
# The end-to-end tests on kind, for machines with a Docker engine: real kubelets, real pods running the
# images built from this repository's Dockerfile. (Without Docker, `make test` runs the same tests on
# the local cluster of hack/cluster: real control plane, pods simulated by kwok.)
#
#   bash hack/kind-e2e.sh            # create/reuse the kind cluster, build + load images, run pytest -m e2e
#   KIND_KEEP=1 bash hack/kind-e2e.sh   # keep the cluster afterwards
#
# Steps: kind v0.33.0 from the Go module proxy (`go install`, pinned, cached in ~/.cache/modelserve);
# `docker build --target operator|server`; a kind cluster with one control plane and three workers,
# two of which advertise 4 `nvidia.com/gpu` each (an extended resource patched into node status, with
# the GPU taint and labels: enough for scheduling; the server image runs on CPU there) ; `kind load
# docker-image`; then pytest with MODELSERVE_E2E_KUBECONFIG. The tests install the chart themselves
# (operator Deployment at 0 replicas) and run the operator as a local process with the chart's
# ServiceAccount token; the pods the operator creates use the images loaded here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}"
KIND_VERSION="v0.33.0"
CLUSTER="${KIND_CLUSTER_NAME:-modelserve-e2e}"
TAG="${IMAGE_TAG:-e2e}"
KUBECTL="$CACHE/bin/kubectl"; [ -x "$KUBECTL" ] || KUBECTL=kubectl

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  cat >&2 <<'EOF'
kind-e2e: no Docker engine is running (`docker info` failed), so kind cannot create a cluster here.
  Start Docker (or run on a machine that has it), or use the local cluster instead:
    make test                      # builds the control plane from Go modules, runs every test
    .venv/bin/pytest -m e2e tests/e2e   # only the end-to-end tests, on the local cluster
EOF
  exit 1
fi

# kind, pinned, from the Go module proxy.
KIND_DIR="$CACHE/kind-$KIND_VERSION"
if [ ! -x "$KIND_DIR/kind" ]; then
  mkdir -p "$KIND_DIR.partial"
  GOBIN="$KIND_DIR.partial" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kind@$KIND_VERSION"
  rm -rf "$KIND_DIR"; mv "$KIND_DIR.partial" "$KIND_DIR"
fi
KIND="$KIND_DIR/kind"

KUBECONFIG_PATH="$CACHE/kind-$CLUSTER.kubeconfig"
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  cat >"$CACHE/kind-$CLUSTER.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
  - role: worker
EOF
  "$KIND" create cluster --name "$CLUSTER" --config "$CACHE/kind-$CLUSTER.yaml" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 5m
fi
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_PATH"
export KUBECONFIG="$KUBECONFIG_PATH"

# Two workers become "GPU nodes" for the scheduler: extended resource, taint and labels.
mapfile -t workers < <("$KUBECTL" get nodes -l '!node-role.kubernetes.io/control-plane' -o name | sort)
for node in "${workers[@]:0:2}"; do
  "$KUBECTL" patch "$node" --subresource=status --type=json \
    -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"4"}]'
  "$KUBECTL" taint --overwrite "$node" nvidia.com/gpu=present:NoSchedule
  "$KUBECTL" label --overwrite "$node" nvidia.com/gpu.present=true nvidia.com/gpu.count=4
done

# Images from this repository, loaded into the cluster's nodes.
docker build --target operator -t "modelserve-operator:$TAG" "$ROOT"
docker build --target server -t "modelserve-server:$TAG" "$ROOT"
"$KIND" load docker-image --name "$CLUSTER" "modelserve-operator:$TAG" "modelserve-server:$TAG"

status=0
(
  cd "$ROOT"
  export MODELSERVE_E2E_KUBECONFIG="$KUBECONFIG_PATH"
  export MODELSERVE_E2E_HELM_ARGS="--set operator.image.repository=modelserve-operator --set operator.image.tag=$TAG \
--set server.image.repository=modelserve-server --set server.image.tag=$TAG --set server.imagePullPolicy=Never"
  # GPU pods get the CPU server image: kind has no GPUs, only the scheduling is exercised.
  export MODELSERVE_E2E_OPERATOR_ARGS="--server-image=modelserve-server:$TAG --server-gpu-image=modelserve-server:$TAG"
  export MODELSERVE_IMAGE_PULL_POLICY=Never
  .venv/bin/pytest -m e2e tests/e2e "$@"
) || status=$?

if [ -z "${KIND_KEEP:-}" ]; then "$KIND" delete cluster --name "$CLUSTER"; fi
exit "$status"

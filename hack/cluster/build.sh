#!/usr/bin/env bash
# Builds the local test cluster's binaries from the Go module proxy with the ordinary `go` client, and
# caches them under ~/.cache/modelserve/<component>-<version>/ so only a machine's first run pays:
#   - kube-apiserver, kube-controller-manager, kube-scheduler, and the real node's kubelet and kube-proxy: module hack/k8s pins k8s.io/kubernetes and
#     maps its 31 staging modules to their published versions (k8s.io/kubernetes has replace directives,
#     so `go install ...@version` refuses it);
#   - etcd: module hack/cluster/etcd pins go.etcd.io/etcd/server/v3 (same reason: replace directives);
#   - kwok + kwokctl: `go install sigs.k8s.io/kwok/cmd/...@v0.8.0` (no replace directives);
#   - prometheus-adapter: module hack/cluster/adapter pins sigs.k8s.io/prometheus-adapter (`go install
#     ...@version` asks the proxy for the version list, which the proxy here refuses);
#   - kube-state-metrics: module hack/cluster/kube-state-metrics (the dashboard's replica series).
# Each component is built into a `.partial` directory and renamed when complete, so an interrupted
# build never looks finished. Idempotent: a second run only checks. Build time and peak memory
# (GNU time -v) go to ~/.cache/modelserve/build-logs/<component>.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}"
LOGS="$CACHE/build-logs"
mkdir -p "$CACHE" "$LOGS"

command -v go >/dev/null 2>&1 || {
  echo "cluster-build: the Go toolchain (go >= 1.26.0) is required to build the local cluster" >&2; exit 1; }

# Versions come from the pinning modules, so bumping a go.mod is the only edit a version change needs.
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$ROOT/hack/k8s/go.mod")"
ETCD_VERSION="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$HERE/etcd/go.mod")"
KWOK_VERSION="v0.8.0"
ADAPTER_VERSION="$(awk '$1 == "require" && $2 == "sigs.k8s.io/prometheus-adapter" {print $3}' "$HERE/adapter/go.mod")"
[ -n "$K8S_VERSION" ] && [ -n "$ETCD_VERSION" ] || { echo "cluster-build: cannot read pinned versions" >&2; exit 1; }

# Modules are resolved from go.sum as committed; `-mod=mod` lets go add missing go.sum lines on a
# fresh module cache without editing the pins.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

timed() {  # timed LOG CMD...: run CMD, appending its time and peak RSS to LOG when GNU time exists
  local log="$1"; shift
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -a -o "$log" "$@"
  else
    echo "(GNU time not installed: no peak-memory figure)" >>"$log"; "$@"
  fi
}

# have DIR VERSION BIN...: every BIN in DIR exists and `BIN --version` mentions VERSION (a half-written
# binary fails this, so it is rebuilt).
have() {
  local dir="$1" want="$2"; shift 2
  local b out
  for b in "$@"; do
    [ -x "$dir/$b" ] || return 1
    # Captured first: `cmd | grep -q` under pipefail fails when grep exits early and cmd gets SIGPIPE.
    out="$("$dir/$b" --version 2>&1)" || return 1
    [[ "$out" == *"${want#v}"* ]] || return 1
  done
}

promote() {  # promote PARTIAL FINAL
  rm -rf "$2"; mv "$1" "$2"
}

build_k8s() {
  local final="$CACHE/k8s-$K8S_VERSION" partial="$CACHE/k8s-$K8S_VERSION.partial" log="$LOGS/k8s.log"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
  if have "$final" "$K8S_VERSION" "${cmds[@]}"; then echo "cluster-build: k8s $K8S_VERSION cached"; return; fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  mkdir -p "$partial"
  local start=$SECONDS c
  echo "cluster-build: building Kubernetes $K8S_VERSION (cold: ~5 min and ~2 GB RSS on 2 cores; log $log)"
  for c in "${cmds[@]}"; do
    if have "$partial" "$K8S_VERSION" "$c"; then continue; fi   # e.g. an earlier run interrupted later
    (cd "$ROOT/hack/k8s" && timed "$log" go build -trimpath -ldflags "$ldflags" \
       -o "$partial/$c" "k8s.io/kubernetes/cmd/$c")
  done
  echo "k8s build seconds: $((SECONDS - start))" >>"$log"
  have "$partial" "$K8S_VERSION" "${cmds[@]}" || { echo "cluster-build: k8s binaries fail --version" >&2; exit 1; }
  promote "$partial" "$final"
}

build_etcd() {
  local final="$CACHE/etcd-$ETCD_VERSION" partial="$CACHE/etcd-$ETCD_VERSION.partial" log="$LOGS/etcd.log"
  if have "$final" "$ETCD_VERSION" etcd; then echo "cluster-build: etcd $ETCD_VERSION cached"; return; fi
  mkdir -p "$partial"
  local start=$SECONDS
  echo "cluster-build: building etcd $ETCD_VERSION (log $log)"
  (cd "$HERE/etcd" && timed "$log" go build -trimpath -ldflags "-s -w" -o "$partial/etcd" go.etcd.io/etcd/server/v3)
  echo "etcd build seconds: $((SECONDS - start))" >>"$log"
  have "$partial" "$ETCD_VERSION" etcd || { echo "cluster-build: etcd fails --version" >&2; exit 1; }
  promote "$partial" "$final"
}

build_kwok() {
  local final="$CACHE/kwok-$KWOK_VERSION" partial="$CACHE/kwok-$KWOK_VERSION.partial" log="$LOGS/kwok.log"
  if have "$final" "$KWOK_VERSION" kwok kwokctl; then echo "cluster-build: kwok $KWOK_VERSION cached"; return; fi
  mkdir -p "$partial"
  local start=$SECONDS
  echo "cluster-build: building kwok $KWOK_VERSION (log $log)"
  # GOFLAGS' -mod=mod does not apply outside a module; `go install pkg@version` needs it unset.
  (cd "$partial" && GOFLAGS=-buildvcs=false GOBIN="$partial" timed "$log" go install -trimpath -ldflags "-s -w" \
     "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION")
  echo "kwok build seconds: $((SECONDS - start))" >>"$log"
  have "$partial" "$KWOK_VERSION" kwok kwokctl || { echo "cluster-build: kwok fails --version" >&2; exit 1; }
  promote "$partial" "$final"
}

build_adapter() {
  local final="$CACHE/prometheus-adapter-$ADAPTER_VERSION" partial="$CACHE/prometheus-adapter-$ADAPTER_VERSION.partial"
  local log="$LOGS/prometheus-adapter.log"
  # The adapter prints no version of its own; a binary whose --help lists its flags is a finished build.
  adapter_ok() { local out; out="$("$1/adapter" --help 2>&1 || true)"; [[ "$out" == *--prometheus-url* ]]; }
  if [ -x "$final/adapter" ] && adapter_ok "$final"; then
    echo "cluster-build: prometheus-adapter $ADAPTER_VERSION cached"; return; fi
  mkdir -p "$partial"
  local start=$SECONDS
  echo "cluster-build: building prometheus-adapter $ADAPTER_VERSION (log $log)"
  (cd "$HERE/adapter" && timed "$log" go build -trimpath -ldflags "-s -w" -o "$partial/adapter" \
     sigs.k8s.io/prometheus-adapter/cmd/adapter)
  echo "prometheus-adapter build seconds: $((SECONDS - start))" >>"$log"
  adapter_ok "$partial" || { echo "cluster-build: prometheus-adapter fails --help" >&2; exit 1; }
  promote "$partial" "$final"
}

KSM_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kube-state-metrics/v2" {print $3}' "$HERE/kube-state-metrics/go.mod")"

build_ksm() {
  local final="$CACHE/kube-state-metrics-$KSM_VERSION" partial="$CACHE/kube-state-metrics-$KSM_VERSION.partial"
  local log="$LOGS/kube-state-metrics.log"
  ksm_ok() { local out; out="$("$1/kube-state-metrics" version 2>&1 || true)"; [[ "$out" == *"kube-state-metrics, version"* ]]; }
  if [ -x "$final/kube-state-metrics" ] && ksm_ok "$final"; then
    echo "cluster-build: kube-state-metrics $KSM_VERSION cached"; return; fi
  mkdir -p "$partial"
  local start=$SECONDS
  echo "cluster-build: building kube-state-metrics $KSM_VERSION (log $log)"
  (cd "$HERE/kube-state-metrics" && timed "$log" go build -trimpath -ldflags "-s -w" \
     -o "$partial/kube-state-metrics" k8s.io/kube-state-metrics/v2)
  echo "kube-state-metrics build seconds: $((SECONDS - start))" >>"$log"
  ksm_ok "$partial" || { echo "cluster-build: kube-state-metrics fails `version`" >&2; exit 1; }
  promote "$partial" "$final"
}

case "${1:-all}" in
  all) build_k8s; build_etcd; build_kwok; build_adapter; build_ksm ;;
  adapter) build_adapter ;;
  kube-state-metrics) build_ksm ;;
  k8s) build_k8s ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  versions) echo "K8S_VERSION=$K8S_VERSION ETCD_VERSION=$ETCD_VERSION KWOK_VERSION=$KWOK_VERSION ADAPTER_VERSION=$ADAPTER_VERSION" ;;
  *) echo "usage: $0 [all|k8s|etcd|kwok|adapter|kube-state-metrics|versions]" >&2; exit 2 ;;
esac
echo "cluster-build: ok ($CACHE: k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"

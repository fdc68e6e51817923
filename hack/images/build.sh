#!/usr/bin/env bash
# Builds the container images the local cluster's real node runs, offline, and caches them by content:
#   - a local base image: Debian bookworm (minbase + python3) made with debootstrap from this machine's
#     own apt sources (no host name is written anywhere), with the machine's extra CA certificates, so
#     pip inside the build trusts the same TLS interception the host does. The extra CAs go into this
#     local base only, never into a user's image;
#   - a static pause image (hack/images/pause.c), because no registry serves registry.k8s.io/pause;
#   - the `operator` and `server` targets of the project's one Dockerfile, built on that base with
#     `--build-arg PYTHON_IMAGE=<base>` (the Dockerfile users build; it is not forked).
# Each image is saved as a tarball under $CACHE/images/ named by a content key (the inputs' sha256), so
# a second run with no change only checks. hack/cluster imports the tarballs into containerd's k8s.io
# namespace. `server-gpu` needs a CUDA base no registry here serves: it is checked statically only
# (tests/packaging/test_dockerfile.py).
#
# The build uses a private dockerd (its own socket, data root and pidfile under $CACHE, no iptables, no
# bridge; builds use the host network) started here and stopped by PID at the end.
#
#   bash hack/images/build.sh            build what changed; print the refs
#   bash hack/images/build.sh refs       print the refs of the current sources (no build)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}"
OUTDIR="$CACHE/images"
LOGS="$CACHE/build-logs"
SUITE="bookworm"
REPO="modelserve.local"   # image names: never a registry anyone could pull from
mkdir -p "$OUTDIR" "$LOGS"

say() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }

sha() { sha256sum | cut -c1-16; }

# Content keys. The base depends on this script's base section, the suite and the CA files; the pause
# image on pause.c; the app images on every file the Dockerfile's build context admits, plus the base.
extra_cas() { find /usr/local/share/ca-certificates -type f -name '*.crt' 2>/dev/null | sort; }
base_key() { { echo "$SUITE"; sed -n '/^build_base()/,/^}/p' "$0"; extra_cas | xargs -r cat; } | sha; }
pause_key() { sha <"$HERE/pause.c"; }
app_key() {
  (cd "$ROOT" && {
    echo "$1"
    git ls-files -co --exclude-standard -- Dockerfile .dockerignore pyproject.toml README.md server operator \
      | grep -v -e '__pycache__' -e '\.pyc$' | sort | while read -r f; do [ -f "$f" ] && { echo "$f"; cat "$f"; }; done
  } | sha)
}

BASE_REF="$REPO/base:$SUITE-$(base_key)"
PAUSE_REF="$REPO/pause:$(pause_key)"
APP_KEY="$(app_key "$BASE_REF")"
OPERATOR_REF="$REPO/modelserve-operator:$APP_KEY"
SERVER_REF="$REPO/modelserve-server:$APP_KEY"

refs() {
  echo "BASE_REF=$BASE_REF"
  echo "PAUSE_REF=$PAUSE_REF"
  echo "OPERATOR_REF=$OPERATOR_REF"
  echo "SERVER_REF=$SERVER_REF"
}
tarball() { echo "$OUTDIR/$(echo "$1" | tr '/:' '__').tar"; }

if [ "${1:-build}" = refs ]; then refs; exit 0; fi
[ "$(id -u)" = 0 ] || die "building images needs root (debootstrap, dockerd)"
for tool in debootstrap dockerd docker gcc; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (make setup installs it: hack/install-system-deps.sh)"
done

# --- the private docker engine -------------------------------------------------------------------
DOCKER_DIR="$CACHE/docker"
export DOCKER_HOST="unix://$DOCKER_DIR/docker.sock"
DOCKER=/usr/bin/docker   # Debian's CLI: with DOCKER_BUILDKIT=1 it builds only the target's stages
[ -x "$DOCKER" ] || DOCKER="$(command -v docker)"
DOCKERD_PID=""
stop_dockerd() {
  [ -n "$DOCKERD_PID" ] || return 0
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
}
start_dockerd() {
  [ -n "$DOCKERD_PID" ] && return 0
  mkdir -p "$DOCKER_DIR"
  say "starting a private dockerd (log $LOGS/dockerd.log)"
  setsid dockerd --data-root "$DOCKER_DIR/root" --exec-root "$DOCKER_DIR/exec" \
    --pidfile "$DOCKER_DIR/dockerd.pid" -H "$DOCKER_HOST" --iptables=false --ip-forward=false \
    --bridge=none --default-ulimit nofile=1048576:1048576 >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  trap stop_dockerd EXIT
  for _ in $(seq 300); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 30 "$LOGS/dockerd.log" >&2 || true
  die "dockerd did not become ready (the last lines of its log are above)"
}
have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
load_or_build() {  # load_or_build REF BUILD_FN: the tarball is the cache; the engine is only a builder
  local ref="$1" fn="$2" tar; tar="$(tarball "$1")"
  if [ -s "$tar" ]; then say "$ref cached"; return 0; fi
  start_dockerd
  if ! have_image "$ref"; then "$fn"; fi
  "$DOCKER" save -o "$tar.partial" "$ref"
  mv "$tar.partial" "$tar"
}

# --- the base image ------------------------------------------------------------------------------
build_base() {
  local mirror rootfs="$CACHE/rootfs-$SUITE.partial"
  # The mirror this machine already uses (deb822 .sources first, then one-line .list); never hard-coded.
  mirror="$(awk '$1 == "URIs:" {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
  [ -n "$mirror" ] || die "no apt mirror found in /etc/apt/sources.list*"
  say "base: debootstrap $SUITE minbase + python3 (~2.5 min; log $LOGS/debootstrap.log)"
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$SUITE" "$rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 \
    || { tail -n 30 "$LOGS/debootstrap.log" >&2; die "debootstrap failed (log tail above)"; }
  local ca
  while read -r ca; do [ -n "$ca" ] && cp "$ca" "$rootfs/usr/local/share/ca-certificates/"; done < <(extra_cas)
  chroot "$rootfs" update-ca-certificates >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_REF" >/dev/null
  rm -rf "$rootfs"
}

# --- the pause image -----------------------------------------------------------------------------
build_pause() {
  local dir; dir="$(mktemp -d)"
  gcc -static -O2 -o "$dir/pause" "$HERE/pause.c"
  tar -C "$dir" -c pause | "$DOCKER" import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_REF" >/dev/null
  rm -rf "$dir"
}

# --- the project's images ------------------------------------------------------------------------
build_target() {  # build_target TARGET REF
  local start=$SECONDS
  say "building Dockerfile target $1 on $BASE_REF (~1-2 min cold; log $LOGS/image-$1.log)"
  (cd "$ROOT" && DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain --target "$1" \
     --build-arg "PYTHON_IMAGE=$BASE_REF" --build-arg "REVISION=$APP_KEY" -t "$2" . >"$LOGS/image-$1.log" 2>&1) \
    || { tail -n 40 "$LOGS/image-$1.log" >&2; die "docker build --target $1 failed (log tail above)"; }
  say "built $2 in $((SECONDS - start))s"
}
build_operator() { build_target operator "$OPERATOR_REF"; }
build_server() { build_target server "$SERVER_REF"; }

load_or_build "$BASE_REF" build_base
load_or_build "$PAUSE_REF" build_pause
for target in operator server; do
  ref_var="$(echo "$target" | tr a-z A-Z)_REF"
  tar="$(tarball "${!ref_var}")"
  if [ ! -s "$tar" ]; then
    start_dockerd
    have_image "$BASE_REF" || "$DOCKER" load -i "$(tarball "$BASE_REF")" >/dev/null
  fi
  load_or_build "${!ref_var}" "build_$target"
done
# Old tarballs of earlier sources are dropped so the cache does not grow without bound.
keep="$(for r in "$BASE_REF" "$PAUSE_REF" "$OPERATOR_REF" "$SERVER_REF"; do basename "$(tarball "$r")"; done)"
for f in "$OUTDIR"/*.tar; do
  [ -e "$f" ] || continue
  grep -qxF "$(basename "$f")" <<<"$keep" || rm -f "$f"
done
refs | tee "$OUTDIR/refs.env"

#!/usr/bin/env bash
# Installs Triton's perf_analyzer (PyPI `perf-analyzer`, pinned) into ~/.cache/modelserve so that
# tests/server/test_perf_analyzer.py can run it against `modelserve serve` (issue 2's "answers
# perf_analyzer correctly" is checked by running it, not by reading its source).
#
# Why a wrapper: the wheel is manylinux_2_38, its binary needs glibc >= 2.38 and a newer libstdc++;
# Debian 12 has glibc 2.36. On such a host the binary runs through Debian 13 (trixie)'s own loader
# with trixie's libc6, libstdc++6, libgcc-s1 (plus libssl3t64, zlib1g and libzstd1, so that nothing
# it links comes from the host) unpacked beside it with `dpkg -x`. The .debs come from the host's own
# Debian mirror through a throwaway apt state in a temp dir: the mirror's URI is read from the
# machine's apt sources at run time and is never written into this repository, the cache or the
# log (apt's own output is shown with URIs masked); the machine's apt configuration, lists and
# installed packages are left as they are, and no root is needed. On a host whose glibc is new enough the wrapper starts the binary
# directly.
#
# Result: $CACHE/bin/perf_analyzer (a wrapper script), the wheel under $CACHE/perf-analyzer/.
# Idempotent: a second run only checks `perf_analyzer --version`. Called by install-system-deps.sh.
# Overrides: MODELSERVE_CACHE (default ~/.cache/modelserve), MODELSERVE_DEBIAN_MIRROR (a Debian
# archive URI, when the host's apt sources do not name one).
set -euo pipefail
CACHE="${MODELSERVE_CACHE:-$HOME/.cache/modelserve}"
BIN="$CACHE/bin"
PA_VERSION="2.60.0"
SUITE="trixie"
DEBS=(libc6 libstdc++6 libgcc-s1 libssl3t64 zlib1g libzstd1)
DEST="$CACHE/perf-analyzer"
WRAPPER="$BIN/perf_analyzer"
STAMP="perf-analyzer==$PA_VERSION"
log() { echo "install-perf-analyzer: $*" >&2; }
# apt's messages name the mirror: show them with every URI masked.
show_masked() { sed -E 's#[A-Za-z][A-Za-z0-9+.-]*://[^ ]*#<apt mirror>#g' "$@" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -x "$WRAPPER" ] && [ "$(head -n1 "$DEST/.stamp" 2>/dev/null)" = "$STAMP" ] \
   && "$WRAPPER" --version >/dev/null 2>&1; then
  log "ok ($WRAPPER: $("$WRAPPER" --version 2>&1 | head -n1); already installed)"
  exit 0
fi

start=$SECONDS
mkdir -p "$BIN" "$CACHE"
NEW="$CACHE/perf-analyzer.new"
rm -rf "$NEW"
mkdir -p "$NEW"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$NEW"' EXIT

# 1. The wheel. pip refuses a manylinux_2_38 wheel on a glibc 2.36 host unless told the platform.
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_38_x86_64 -d "$tmp/wheel" "perf-analyzer==$PA_VERSION"
python3 -m zipfile -e "$tmp"/wheel/perf_analyzer-*.whl "$NEW"
REAL="$NEW/perf_analyzer/bin/perf_analyzer"
[ -f "$REAL" ] || die "the wheel has no perf_analyzer/bin/perf_analyzer"
chmod 0755 "$REAL"
FINAL_REAL="$DEST/perf_analyzer/bin/perf_analyzer"

# 2. Does it run as it is (glibc new enough)? Then no foreign loader is needed.
if "$REAL" --version >/dev/null 2>&1; then
  log "the host's glibc runs perf_analyzer natively"
  exec_line="exec \"$FINAL_REAL\" \"\$@\""
else
  # 3. Debian 13's loader and libraries, fetched with a throwaway apt state.
  mirror="${MODELSERVE_DEBIAN_MIRROR:-}"
  if [ -z "$mirror" ]; then
    # The URI of the host's main Debian archive: the first deb source whose suite is the host's
    # codename (not -updates/-security), from one-line and deb822 sources alike.
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    mirror=$(python3 - "$codename" <<'PY'
import glob, re, sys
codename = sys.argv[1]
files = glob.glob("/etc/apt/sources.list") + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
    + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for path in files:
    text = open(path, encoding="utf-8", errors="replace").read()
    if path.endswith(".sources"):
        for block in re.split(r"\n\s*\n", text):
            fields = {}
            for line in block.splitlines():
                m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                if m and not line.startswith("#"):
                    fields[m.group(1).lower()] = m.group(2).split()
            if "deb" in fields.get("types", []) and codename in fields.get("suites", []) \
                    and fields.get("enabled", ["yes"])[0].lower() != "no" and fields.get("uris"):
                print(fields["uris"][0]); sys.exit(0)
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                print(words[1]); sys.exit(0)
sys.exit(1)
PY
) || die "no Debian archive found in /etc/apt/sources.list(.d) for '$codename'; set MODELSERVE_DEBIAN_MIRROR"
  fi
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$keyring" ] || die "$keyring missing (apt-get install debian-archive-keyring)"
  log "fetching $SUITE ${DEBS[*]} from the host's Debian mirror (read from its apt sources)"
  mkdir -p "$tmp/apt/lists/partial" "$tmp/apt/cache/archives/partial" "$tmp/debs"
  : >"$tmp/apt/status"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
    "$mirror" "$SUITE" "$keyring" >"$tmp/apt/trixie.sources"
  # Downloads run as the _apt user where it exists: let it write the temp dirs.
  chmod 0755 "$tmp"
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown -R _apt "$tmp/apt" "$tmp/debs"; fi
  apt_opts=(
    -o "Dir::Etc::SourceList=$tmp/apt/trixie.sources" -o "Dir::Etc::SourceParts=$tmp/apt/none"
    -o "Dir::State::Lists=$tmp/apt/lists" -o "Dir::State::Status=$tmp/apt/status"
    -o "Dir::Cache=$tmp/apt/cache" -o "APT::Architecture=amd64" -o "APT::Architectures=amd64"
    -o "Acquire::Languages=none" -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
  )
  if ! apt-get -q "${apt_opts[@]}" update >"$tmp/apt.log" 2>&1 || grep -qE '^(W|E): ' "$tmp/apt.log"; then
    show_masked "$tmp/apt.log"; die "apt-get update of $SUITE from the host's Debian mirror failed"
  fi
  (cd "$tmp/debs" && apt-get -q "${apt_opts[@]}" download "${DEBS[@]}") >"$tmp/apt.log" 2>&1 \
    || { show_masked "$tmp/apt.log"; die "apt-get download ${DEBS[*]} failed"; }
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$NEW/sysroot"; done
  LIB="$NEW/sysroot/usr/lib/x86_64-linux-gnu"
  [ -x "$LIB/ld-linux-x86-64.so.2" ] || die "no ld-linux-x86-64.so.2 in the unpacked libc6"
  # Every library the binary links must resolve (ldd through the trixie loader).
  "$LIB/ld-linux-x86-64.so.2" --library-path "$LIB" --list "$REAL" >"$tmp/ldd.txt" 2>&1 \
    || { cat "$tmp/ldd.txt" >&2; die "the trixie loader cannot load perf_analyzer"; }
  if grep -q 'not found' "$tmp/ldd.txt"; then
    cat "$tmp/ldd.txt" >&2; die "perf_analyzer needs libraries that are neither bundled nor on the host"
  fi
  # Host libraries still work under the newer glibc, but say so: the bundle is meant to be complete.
  if grep '=> /' "$tmp/ldd.txt" | grep -v "=> $NEW/" >&2; then log "(the libraries above come from the host)"; fi
  FINAL_LIB="$DEST/sysroot/usr/lib/x86_64-linux-gnu"
  exec_line="exec \"$FINAL_LIB/ld-linux-x86-64.so.2\" --argv0 perf_analyzer --library-path \"$FINAL_LIB\" \"$FINAL_REAL\" \"\$@\""
  ls "$tmp"/debs >"$NEW/.debs"
fi

# 4. Move into place, write the wrapper, check it runs. perf_analyzer has no --help (it exits 99 and
# prints its usage when run without arguments); --version exiting 0 and that usage text are the check.
echo "$STAMP" >"$NEW/.stamp"
rm -rf "$DEST" "$WRAPPER"
mv "$NEW" "$DEST"
cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# Written by hack/install-perf-analyzer.sh: perf_analyzer $PA_VERSION (PyPI wheel in $DEST).
$exec_line
EOF
chmod 0755 "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
"$WRAPPER" >"$tmp/usage.txt" 2>&1 || true
if ! "$WRAPPER" --version >"$tmp/version.txt" 2>&1 || ! grep -q '^Usage: perf_analyzer' "$tmp/usage.txt"; then
  cat "$tmp/version.txt" "$tmp/usage.txt" >&2
  rm -f "$DEST/.stamp" "$WRAPPER"
  die "$WRAPPER does not run"
fi
log "ok ($WRAPPER: $(head -n1 "$tmp/version.txt"); installed in $((SECONDS - start)) s)"

#!/usr/bin/env bash
# Build the real Kubernetes CRD API server (k8s.io/apiextensions-apiserver + the wrapper main in
# apiserver/) and take etcd, from Debian sid's packaged Go sources, into a cache directory.
#
#   tests/conformance/build-apiserver.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $INTERP_APISERVER_CACHE, then ~/.cache/interp-operator/apiserver.
# Nothing is installed: a private apt configuration (own sources.list, lists, cache and an empty
# dpkg status) downloads the packages, `dpkg -x` unpacks them, and Go builds in GOPATH mode with
# the network off. sid's Release file is verified with this machine's debian-archive-keyring.
#
# The result is CACHE_DIR/bin-<key>/{conformance-apiserver,etcd,manifest.txt}; <key> hashes the
# recipe version, the wrapper source and the root package list, so changing any rebuilds, and a warm
# cache is reused without touching the network. The bin directory is printed as the last line of
# stdout; progress goes to stderr. INTERP_APISERVER_REFRESH=1 rebuilds from today's sid.
# INTERP_DEBIAN_MIRROR and INTERP_DEBIAN_KEYRING override the mirror and the keyring.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${1:-${INTERP_APISERVER_CACHE:-$HOME/.cache/interp-operator/apiserver}}"
MIRROR="${INTERP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING="${INTERP_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
# golang-go names the Go toolchain sid builds its Go packages with; the rest come as dependencies.
ROOT_PACKAGES=(golang-k8s-apiextensions-apiserver-dev golang-go etcd-server)

START=$SECONDS
log() { printf '[build-apiserver %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$CACHE_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"
# Bump when the build steps below change what is built; comments and logging do not need a rebuild.
RECIPE=1
KEY="$( { echo "recipe $RECIPE"; cat "$HERE"/apiserver/*.go; printf '%s\n' "${ROOT_PACKAGES[@]}"; } \
  | sha256sum | cut -c1-16)"
BIN="$CACHE_DIR/bin-$KEY"

# One build at a time per cache (pytest-xdist workers each start a server and may race here).
exec 9>"$CACHE_DIR/.lock"
flock 9

if [[ -x "$BIN/conformance-apiserver" && -x "$BIN/etcd" && -f "$BIN/manifest.txt" \
      && "${INTERP_APISERVER_REFRESH:-0}" != 1 ]]; then
  log "reusing cached build $BIN"
  echo "$BIN"
  exit 0
fi

WORK="$CACHE_DIR/work-$KEY"
rm -rf "$CACHE_DIR"/work-*
# A failed build keeps its logs in $WORK for the error report, but not its 2-3 GB of sources.
trap '[[ -d "$BIN" || "${INTERP_APISERVER_KEEP_WORK:-0}" == 1 ]] || rm -rf "$WORK/root" "$WORK/debs" "$WORK/gocache"' EXIT
mkdir -p "$WORK"/{apt/lists/partial,apt/cache/archives/partial,apt/parts,apt/preferences.d,debs,root}
touch "$WORK/apt/status"
[[ -r "$KEYRING" ]] || die "keyring $KEYRING not readable (install debian-archive-keyring)"
echo "deb [signed-by=$KEYRING] $MIRROR sid main" > "$WORK/apt/sources.list"
cat > "$WORK/apt/apt.conf" <<EOF
Dir::Etc::SourceList "$WORK/apt/sources.list";
Dir::Etc::SourceParts "$WORK/apt/parts";
Dir::Etc::Preferences "$WORK/apt/preferences";
Dir::Etc::PreferencesParts "$WORK/apt/preferences.d";
Dir::State::Lists "$WORK/apt/lists";
Dir::State::status "$WORK/apt/status";
Dir::Cache "$WORK/apt/cache";
APT::Architecture "amd64";
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
EOF
export APT_CONFIG="$WORK/apt/apt.conf"

log "apt-get update (private index of Debian sid from $MIRROR, verified with $KEYRING)"
apt-get -q update >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; die "apt-get update failed"; }
# apt-get update exits 0 when the mirror is unreachable or a signature cannot be verified; the index then
# simply is not there.
if grep -qE '^(W|E): .*(NO_PUBKEY|not signed|EXPKEYSIG|is not valid)' "$WORK/apt-update.log"; then
  cat "$WORK/apt-update.log" >&2
  die "sid's Release signature could not be verified with $KEYRING (set INTERP_DEBIAN_KEYRING to a newer keyring)"
fi
if ! compgen -G "$WORK/apt/lists/*_Packages*" >/dev/null; then
  cat "$WORK/apt-update.log" >&2
  die "apt-get update fetched no package index from $MIRROR (network, proxy or mirror down?)"
fi

log "resolving the dependency closure of ${ROOT_PACKAGES[*]}"
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances "${ROOT_PACKAGES[@]}" >"$WORK/closure.raw" 2>"$WORK/closure.err" \
  || { cat "$WORK/closure.err" >&2; die "apt-cache depends failed"; }
# Go source packages (-dev), the Go toolchain and its standard library sources, and etcd. Everything
# else in the closure (libc, debconf, protoc...) is for installing, not for building in GOPATH mode.
grep -v '^ ' "$WORK/closure.raw" | grep -v '^<' | sort -u \
  | grep -E '^(golang-.*-dev|golang-[0-9.]+-(go|src)|golang-src|etcd-server)$' >"$WORK/packages.txt" || true
for p in golang-k8s-apiextensions-apiserver-dev etcd-server; do
  grep -qx "$p" "$WORK/packages.txt" || die "package $p not found in sid (package drift?)"
done
grep -qE '^golang-[0-9.]+-go$' "$WORK/packages.txt" || die "no golang-X.Y-go toolchain in the closure of golang-go"
log "downloading $(wc -l <"$WORK/packages.txt") packages"
(cd "$WORK/debs" && xargs -a "$WORK/packages.txt" apt-get -q download >"$WORK/download.log" 2>&1) \
  || { tail -20 "$WORK/download.log" >&2; die "apt-get download failed"; }
log "downloaded $(du -sh "$WORK/debs" | cut -f1); unpacking with dpkg -x"
find "$WORK/debs" -name '*.deb' -print0 \
  | xargs -0 -P "$(nproc)" -n 16 sh -c 'for f; do dpkg -x "$f" "$0" || exit 1; done' "$WORK/root" \
  || die "dpkg -x failed"

GOROOT="$(dirname "$(dirname "$(ls -d "$WORK"/root/usr/lib/go-*/bin/go | sort -V | tail -1)")")"
export GOROOT PATH="$GOROOT/bin:$PATH" GOPATH="$WORK/root/usr/share/gocode" GO111MODULE=off GOPROXY=off \
  GOFLAGS= GOENV=off GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=0 GOCACHE="$WORK/gocache"
log "building with $(go version) (GOPATH mode, offline); this takes 3-5 minutes on 2 cores"
mkdir -p "$WORK/bin"
(cd "$HERE/apiserver" && go build -trimpath -ldflags=-s -o "$WORK/bin/conformance-apiserver" .) \
  >"$WORK/go-build.log" 2>&1 || { tail -40 "$WORK/go-build.log" >&2; die "go build failed"; }
cp "$WORK/root/usr/bin/etcd" "$WORK/bin/etcd"
"$WORK/bin/etcd" --version >/dev/null || die "the packaged etcd does not run here"

{
  echo "# built $(date -u +%FT%TZ) in $((SECONDS - START)) s from $MIRROR sid with $(go version)"
  find "$WORK/debs" -name '*.deb' -printf '%f\n' | sed 's/%3a/:/; s/_all\.deb$//; s/_amd64\.deb$//; s/_/=/' | sort
} >"$WORK/bin/manifest.txt"

rm -rf "$BIN"
mv "$WORK/bin" "$BIN"
if [[ "${INTERP_APISERVER_KEEP_WORK:-0}" != 1 ]]; then
  rm -rf "$WORK"
fi
# Builds for older script/wrapper versions are dead weight (about 110 MB each).
find "$CACHE_DIR" -maxdepth 1 -name 'bin-*' ! -name "bin-$KEY" -exec rm -rf {} +
log "built $BIN in $((SECONDS - START)) s"
echo "$BIN"

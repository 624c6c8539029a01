#!/usr/bin/env bash
# `make image-test`: build image/Dockerfile on a local Debian base with buildah, then check the result from inside:
# the operator's entry point and version, a workload's --help, a numeric non-root user, a real two-rank gang
# probe (torchrun, gloo all-reduce) as that user, and the operator from the image reconciling an object on interp-local
# (tests/image/operator-in-image.sh).
#
#   bash tests/image/image-test.sh IMAGE VERSION
#
# Exit status: 0 passed, 2 buildah/debootstrap unavailable and not installable (the caller prints a SKIPPED banner),
# anything else a failed build or check. The base image and buildah's layer cache make reruns fast.
set -euo pipefail
IMAGE=${1:?image name}
VERSION=${2:?version}
BASE_IMAGE=${IMAGE_TEST_BASE:-localhost/interp-base:bookworm}
CACHE=${IMAGE_TEST_CACHE:-.cache/image-base}
RUN_AS=65532
started=$SECONDS
say() { echo "image-test [$((SECONDS - started))s]: $*"; }

# 1. Tools: install buildah and debootstrap when missing, if this is root with apt; otherwise skip (exit 2).
if ! command -v buildah >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "image-test: buildah/debootstrap missing, and this is not root with apt-get" >&2; exit 2
  fi
  say "installing buildah and debootstrap with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends buildah debootstrap >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends buildah debootstrap >/dev/null 2>&1 \
      || { echo "image-test: apt-get cannot install buildah/debootstrap" >&2; exit 2; }
  fi
fi
if [ "$(id -u)" != 0 ]; then echo "image-test: buildah's chroot isolation needs root here" >&2; exit 2; fi

# 2. The local base (public base images cannot be pulled here).
say "base image $BASE_IMAGE"
bash tests/image/build-base.sh "$CACHE" "$BASE_IMAGE"

# 3. Build with `make image`. What this machine's pip uses (a local torch CPU wheel, file:// indexes, a proxy's CA
# bundle) is mounted into the build; without them the build uses the Dockerfile's defaults (PyTorch's CPU index, PyPI).
pip_conf() {
  if [ -x .venv/bin/pip ]; then .venv/bin/pip config get "global.$1" 2>/dev/null || true
  else python3 -m pip config get "global.$1" 2>/dev/null || true; fi
}
flags=()
torch_pin=${TORCH_PIN:-torch==2.13.0}
torch_index=
wheels=${PIP_FIND_LINKS:-$(pip_conf find-links)}
if [ -n "$wheels" ] && [ -d "$wheels" ] && compgen -G "$wheels/torch-${torch_pin#torch==}+cpu-*.whl" >/dev/null; then
  flags+=(-v "$wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
  torch_pin="$torch_pin+cpu"          # the local CPU wheel, never the CUDA build of the same version on PyPI
  torch_index=https://pypi.org/simple  # for torch's own dependencies
fi
extra=()
for url in ${PIP_EXTRA_INDEX_URL:-$(pip_conf extra-index-url)}; do
  case $url in
    file://*) dir=${url#file://}; root=$(dirname "$dir")
              if [ -d "$dir" ]; then flags+=(-v "$root:$root:ro"); extra+=("$url"); fi ;;
  esac
done
[ ${#extra[@]} -gt 0 ] && flags+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra[*]}")
cert=${PIP_CERT:-$(pip_conf cert)}
if [ -n "$cert" ] && [ -f "$cert" ]; then flags+=(-v "$cert:/etc/interp-build-ca.pem:ro" --build-arg PIP_CERT=/etc/interp-build-ca.pem); fi

say "make image IMAGE=$IMAGE BASE_IMAGE=$BASE_IMAGE TORCH_PIN=$torch_pin"
log=$CACHE/image-build.log
# make pastes IMAGE_BUILD_FLAGS into a shell command line: quote each word for that shell.
make_args=(IMAGE="$IMAGE" BASE_IMAGE="$BASE_IMAGE" TORCH_PIN="$torch_pin" IMAGE_BUILD_FLAGS="$(printf '%q ' "${flags[@]}")")
[ -n "$torch_index" ] && make_args+=(TORCH_INDEX="$torch_index")
if ! make --no-print-directory image "${make_args[@]}" >"$log" 2>&1; then
  tail -40 "$log" >&2; echo "image-test: the image build FAILED (full log: $log)" >&2; exit 1
fi
say "built $IMAGE"

# 4. Checks inside the image.
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
[[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || { echo "image-test: USER is '$user', not a numeric non-root uid" >&2; exit 1; }
[ "${user%%:*}" = "$RUN_AS" ] || { echo "image-test: USER is '$user', the chart runs as $RUN_AS" >&2; exit 1; }
label=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")
[ "$label" = "$VERSION" ] || { echo "image-test: version label '$label' != $VERSION" >&2; exit 1; }

container=$(buildah from --pull-never "$IMAGE")
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
inside() { buildah run --isolation chroot --network host "$container" -- "$@"; }

uid=$(inside id -u)
[ "$uid" = "$RUN_AS" ] || { echo "image-test: processes run as uid $uid, expected $RUN_AS" >&2; exit 1; }
say "runs as uid $uid (USER $user)"

out=$(inside interp-operator --version)
[[ $out == *"$VERSION"* ]] || { echo "image-test: interp-operator --version says '$out', expected $VERSION" >&2; exit 1; }
inside interp-operator --help >/dev/null
inside interpctl --help >/dev/null
say "operator entry points: $out"

inside python -m interp_workloads.probe --help >/dev/null
inside python -m interp_workloads.tiny_lm --help >/dev/null
inside python -c 'import torch, transformers, tokenizers, safetensors, pyarrow, fastapi, uvicorn, matplotlib, kopf
import interp_operator.handlers, interp_workloads.serve, interp_workloads.train, interp_workloads.dump
print("torch", torch.__version__, "transformers", transformers.__version__)'
say "workload modules import and answer --help"

# A real gang of two ranks in one container, started the way the operator starts a multi-process pod (torchrun with
# an explicit master address): rendezvous, gloo all-reduce, the probe's checkpoint. Loopback only: the build
# machine's hostname need not resolve inside the container.
inside timeout 180 sh -c 'set -e; cd /tmp; mkdir -p probe-out; echo "{\"name\": \"image-test\", \"probe\": {\"steps\": 2, \"stepSeconds\": 0}}" > probe.json
  GLOO_SOCKET_IFNAME=lo INTERP_PATH_OUTPUT=/tmp/probe-out OMP_NUM_THREADS=1 \
    torchrun --nnodes=1 --nproc-per-node=2 --node-rank=0 --master-addr=127.0.0.1 --master-port=29531 \
      -m interp_workloads.probe --config probe.json >probe.log 2>&1 || { tail -30 probe.log; exit 1; }
  python -c "import json; s = json.load(open(\"/tmp/probe-out/probe-checkpoint.json\")); print(\"checkpoint\", s); \
assert s == {\"step\": 2, \"worldSizes\": [2]}, s"'
say "two-rank probe passed"

# 5. The operator from the image against interp-local on the host: it reconciles an ActivationDump there.
if ! bash tests/image/operator-in-image.sh "$IMAGE" "$VERSION"; then
  echo "image-test: the operator from the image against interp-local FAILED" >&2; exit 1
fi
say "the operator from the image reconciled an object on interp-local"
say "PASSED in $((SECONDS - started))s"

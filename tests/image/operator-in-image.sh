#!/usr/bin/env bash
# The operator from the image against a control plane: start interp-local on the host (its kubelet runs pods as host
# processes), install the CRDs, run `interp-operator` inside the image as its own user (buildah, chroot isolation,
# host network, the kubeconfig mounted read-only), apply a one-rank ActivationDump and check that the operator
# reconciled it: status.phase set, Accepted=True, the gang's pod created with the operator's default workload image
# (the chart's repository at the package version), and an Event from interp-operator about the object.
#
#   bash tests/image/operator-in-image.sh IMAGE VERSION
#
# image-test.sh runs it after its own checks; it also runs alone against an image already in buildah's storage.
# The pods' own success is not checked (they run on the host, not in the image). Exit status: 0 passed, 2 a tool is
# missing, anything else a failed check (with the operator's and the plane's log tails).
set -euo pipefail
IMAGE=${1:?image name}
VERSION=${2:?version}
WORKLOAD_IMAGE=${WORKLOAD_IMAGE:-ghcr.io/interp-operator/interp-operator:$VERSION}
RUN_AS=65532
BIN=${BIN:-.venv/bin}
NAMESPACE=image-test
OBJECT=image-test-dump
started=$SECONDS
say() { echo "operator-in-image [$((SECONDS - started))s]: $*"; }

for tool in buildah "$BIN/interp-local" "$BIN/kubectl"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "operator-in-image: $tool not found" >&2; exit 2; }
done
buildah inspect --type image "$IMAGE" >/dev/null 2>&1 || { echo "operator-in-image: no image $IMAGE" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/operator-in-image.XXXXXX")
plane_pid= operator_pid= container=
tails() {
  echo "--- operator log (last 40 lines) ---" >&2; tail -40 "$work/operator.log" >&2 2>/dev/null || true
  echo "--- interp-local log (last 15 lines) ---" >&2; tail -15 "$work/plane.log" >&2 2>/dev/null || true
}
told=
fail() { echo "operator-in-image: FAILED: $*" >&2; tails; told=1; exit 1; }
# SIGTERM to the operator (kopf stops its watches), then to interp-local (it stops every pod's processes); the
# process's exit status is left in $stopped_status. buildah run answers a SIGTERM by killing its command, so the
# operator's own process gets it: chroot isolation shares the host's process table.
stopped_status=
descendants() { local child; for child in $(ps -o pid= --ppid "$1"); do echo "$child"; descendants "$child"; done; }
operator_process() {
  local pid
  for pid in $(descendants "$1"); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in *buildah*) continue ;; esac  # buildah-chroot-exec names it too
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "bin/interp-operator "; then echo "$pid"; return; fi
  done
}
stop() {
  local pid=$1 what=$2 target=${3:-$1}
  stopped_status=
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "${target:-$pid}" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" && stopped_status=0 || stopped_status=$?; return 0; }
    sleep 0.1
  done
  echo "operator-in-image: $what did not stop on SIGTERM in 10s, killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  stopped_status=killed
}
cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 2 ] || [ -n "$told" ] || { echo "operator-in-image: FAILED (exit $rc)" >&2; tails; }
  [ -z "$operator_pid" ] || stop "$operator_pid" "the operator" "$(operator_process "$operator_pid")"
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
  stop "$plane_pid" "interp-local"
  rm -rf "$work"
}
trap cleanup EXIT

# 1. The control plane. It binds 127.0.0.1, which the container reaches through the host network.
"$BIN/interp-local" up --kubeconfig "$work/plane.kubeconfig" --state-dir "$work/state" \
  --node image-test-node:cpu=8,memory=32Gi >"$work/plane.log" 2>&1 &
plane_pid=$!
for _ in $(seq 600); do
  grep -q "interp-local ready" "$work/plane.log" 2>/dev/null && break
  kill -0 "$plane_pid" 2>/dev/null || fail "interp-local exited"
  sleep 0.1
done
grep -q "interp-local ready" "$work/plane.log" || fail "interp-local not ready in 60s"
kubectl() { "$BIN/kubectl" --kubeconfig "$work/plane.kubeconfig" --cache-dir "$work/kubectl-cache" "$@"; }
server=$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')
[[ $server == https://127.0.0.1:* ]] || fail "the kubeconfig's server is $server, not on 127.0.0.1"
say "interp-local up at $server"

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=established crd --all --timeout=30s >/dev/null
say "CRDs installed"

# 2. The operator in the image, as the image's user: the kubeconfig (0600, root's) is copied for that uid.
mkdir "$work/kube"
cp "$work/plane.kubeconfig" "$work/kube/config"
chown -R "$RUN_AS:$RUN_AS" "$work/kube"
chmod 0500 "$work/kube"
chmod 0400 "$work/kube/config"
container=$(buildah from --pull-never "$IMAGE")
# A workload module that does not exist: the pods the host's kubelet starts exit at once instead of loading a model.
buildah run --isolation chroot --network host --user "$RUN_AS:$RUN_AS" -v "$work/kube:/kube:ro" \
  --env KUBECONFIG=/kube/config --env INTERP_WORKLOAD_MODULES=ActivationDump=image_test_no_such_module \
  "$container" -- interp-operator -A --metrics-port 0 --health-port 0 --log-format console \
  >"$work/operator.log" 2>&1 &
operator_pid=$!
say "interp-operator started in $IMAGE"

# 3. A one-rank ActivationDump the single node fits (no GPUs asked for), and its claim. Its pod fails at once, and
# with no restarts allowed the object fails and keeps the pod (a restart would replace it between two looks).
kubectl create namespace "$NAMESPACE" >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: interp-data, namespace: $NAMESPACE}
spec:
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: interp.dev/v1alpha1
kind: ActivationDump
metadata: {name: $OBJECT, namespace: $NAMESPACE}
spec:
  model: {hubId: EleutherAI/pythia-70m-deduped}
  dataset:
    source: {claimName: interp-data, subPath: corpora/tiny, readOnly: true}
    format: jsonl
    textField: text
    maxTokens: 4096
  contextLength: 32
  batchSize: 4
  hookPoints: [resid_post.1]
  dtype: float32
  tokensPerShard: 1024
  output: {claimName: interp-data, subPath: activations/tiny}
  parallelism: 1
  worker:
    resources:
      requests: {cpu: 1, memory: 1Gi}
      limits: {memory: 1Gi}
  restartPolicy: {backoffLimit: 0}
EOF
say "applied ActivationDump $NAMESPACE/$OBJECT"

# 4. What the operator wrote: the object's status, the gang's pods, its Events.
phase= accepted= images= reasons=
for _ in $(seq 90); do
  kill -0 "$operator_pid" 2>/dev/null || fail "the operator exited"
  phase=$(kubectl get activationdump "$OBJECT" -n "$NAMESPACE" -o jsonpath='{.status.phase}')
  accepted=$(kubectl get activationdump "$OBJECT" -n "$NAMESPACE" \
    -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}')
  images=$(kubectl get pods -n "$NAMESPACE" -o jsonpath='{.items[*].spec.containers[*].image}' | tr ' ' '\n' \
    | sort -u | xargs)
  reasons=$(kubectl get events -n "$NAMESPACE" --field-selector "involvedObject.name=$OBJECT" \
    -o jsonpath='{.items[?(@.reportingComponent=="interp-operator")].reason}' | tr ' ' '\n' | sort -u | xargs)
  [ -n "$phase" ] && [ "$accepted" = True ] && [ -n "$images" ] && [ -n "$reasons" ] && break
  sleep 1
done
[ -n "$phase" ] || fail "status.phase never set"
[ "$accepted" = True ] || fail "Accepted is '${accepted:-missing}', not True"
[ -n "$images" ] || fail "no pods created in $NAMESPACE"
[ "$images" = "$WORKLOAD_IMAGE" ] || fail "the pods run '$images', not the default workload image $WORKLOAD_IMAGE"
[ -n "$reasons" ] || fail "no Event from interp-operator about $OBJECT"
say "reconciled by the operator in the image: phase $phase, Accepted=True, pods with image $images, events: $reasons"

inner=$(operator_process "$operator_pid")
[ -n "$inner" ] || fail "no interp-operator process under buildah run ($operator_pid)"
stop "$operator_pid" "the operator" "$inner"
operator_pid=
[ "$stopped_status" = 0 ] || fail "the operator's exit on SIGTERM: status $stopped_status, not 0"
if grep -q "^Traceback" "$work/operator.log"; then fail "the operator logged a traceback"; fi
say "the operator stopped cleanly on SIGTERM"
say "PASSED in $((SECONDS - started))s"

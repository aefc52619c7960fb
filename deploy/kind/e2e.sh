#!/usr/bin/env bash
# The checks of `make e2e-kind`, against a release the Makefile has just installed:
#   1. skyhaul k8s wait      every Deployment Available
#   2. skyhaul k8s status    every pod Running and ready
#   3. helm test             every gRPC server SERVING, from inside the cluster
#   4. skyhaul k8s forward   every gRPC port on 127.0.0.1 (ports 60051.., beside a local `skyhaul up`)
#   5. skyhaul status        every server SERVING through the forwards
#   6. pytest tests/e2e -m slow   the local e2e's scenario checks, pointed at the cluster (see below)
#   7. skyhaul k8s traces    Jaeger holds a trace spanning mdc -> terminal -> region
#
# Contract with tests/e2e: with SKYHAUL_E2E_EXTERNAL=1 the e2e tests start nothing and use the
# running system at SKYHAUL_{ORBIT,LINKS,REGION,MDC,TERMINAL}_ADDR (the first region and data
# center), with every target in SKYHAUL_K8S_TARGETS and Jaeger at SKYHAUL_JAEGER_URL.
set -euo pipefail

SKYHAUL="${SKYHAUL:-skyhaul}"
HELM="${HELM:-helm}"
PYTEST="${PYTEST:-pytest}"
K8S_CONTEXT="${K8S_CONTEXT:-kind-skyhaul}"
K8S_NAMESPACE="${K8S_NAMESPACE:-skyhaul}"
HELM_RELEASE="${HELM_RELEASE:-skyhaul}"
PORT_OFFSET="${PORT_OFFSET:-10000}"
JAEGER_URL="${SKYHAUL_JAEGER_URL:-http://127.0.0.1:16686}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-300}"
TRACE_TIMEOUT="${TRACE_TIMEOUT:-300}"

k8s=(--context "$K8S_CONTEXT" --namespace "$K8S_NAMESPACE" --release "$HELM_RELEASE")
step() { printf '\n== %s\n' "$*"; }

work_dir="$(mktemp -d)"
forward_pid=""
cleanup() {
  if [[ -n "$forward_pid" ]] && kill -0 "$forward_pid" 2>/dev/null; then
    kill -TERM "$forward_pid" 2>/dev/null || true
    wait "$forward_pid" 2>/dev/null || true
  fi
  rm -rf "$work_dir"
}
trap cleanup EXIT

step "wait for every deployment"
"$SKYHAUL" k8s wait "${k8s[@]}" --timeout "$WAIT_TIMEOUT"

step "pods"
"$SKYHAUL" k8s status "${k8s[@]}"

step "helm test (skyhaul status inside the cluster)"
"$HELM" test "$HELM_RELEASE" --kube-context "$K8S_CONTEXT" --namespace "$K8S_NAMESPACE" --logs

step "port-forward every gRPC service (local ports +$PORT_OFFSET)"
env_file="$work_dir/forward.env"
"$SKYHAUL" k8s forward "${k8s[@]}" --all --port-offset "$PORT_OFFSET" --env-file "$env_file" \
  >"$work_dir/forward.log" 2>&1 &
forward_pid=$!
for _ in $(seq 1 120); do
  [[ -s "$env_file" ]] && break
  kill -0 "$forward_pid" 2>/dev/null || { cat "$work_dir/forward.log" >&2; exit 1; }
  sleep 0.5
done
[[ -s "$env_file" ]] || { echo "e2e-kind: the forward did not start:" >&2; cat "$work_dir/forward.log" >&2; exit 1; }
cat "$work_dir/forward.log"
# shellcheck disable=SC1090
source "$env_file"

step "skyhaul status through the forwards"
targets=()
for target in $SKYHAUL_K8S_TARGETS; do targets+=(--target "$target"); done
"$SKYHAUL" status "${targets[@]}"

step "scenario checks (pytest tests/e2e -m slow against the cluster)"
if compgen -G "tests/e2e/test_*.py" >/dev/null; then
  SKYHAUL_E2E_EXTERNAL=1 SKYHAUL_JAEGER_URL="$JAEGER_URL" "$PYTEST" -q -m slow tests/e2e
else
  echo "no tests/e2e/test_*.py: skipped"
fi

step "a trace spanning mdc -> terminal -> region in Jaeger ($JAEGER_URL)"
"$SKYHAUL" k8s traces --jaeger-url "$JAEGER_URL" --service mdc --require mdc,terminal,region \
  --timeout "$TRACE_TIMEOUT"

printf '\ne2e-kind: PASSED (release %s in %s, context %s)\n' "$HELM_RELEASE" "$K8S_NAMESPACE" "$K8S_CONTEXT"

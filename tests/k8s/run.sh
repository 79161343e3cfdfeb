#!/usr/bin/env bash
# run.sh - offline checks of deploy/k8s (ctest: k8s_manifests):
#   1. yamllint (Debian's) on every file under deploy/k8s;
#   2. each overlay (cpu, gpu) rendered by kustomize v5 (kubectl from
#      tests/k8s/install-tools.sh), yamllint on the output, then every object
#      against the Kubernetes schemas (npm kubernetes-models) and what shardlm
#      needs of them (tests/k8s/manifests.mjs): SHARDLM_WORLD_SIZE = replicas,
#      a power of two, a pinned tag equal to the project version, the probe,
#      per-pod volumes only, the Secret, the services;
#   3. overlays that break each rule must be refused, naming the fault.
#   run.sh SOURCE_DIR
# Exit 0: passed; 77: skipped (a tool is missing, outside CI); 1: failed.
set -euo pipefail
SRC=$(cd "${1:?usage: run.sh SOURCE_DIR}" && pwd)
HERE=$SRC/tests/k8s
TOOLS=${SHARDLM_K8S_TOOLS:-$SRC/.cache/k8s-tools}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

TEST_NAME=k8s_manifests FAIL_LOGS=
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"

command -v yamllint >/dev/null || skip "yamllint is not installed (scripts/install-deps.sh)"
command -v node >/dev/null && command -v npm >/dev/null || skip "node/npm are not installed"
command -v unzip >/dev/null || skip "unzip is not installed (scripts/install-deps.sh)"
"$HERE/install-tools.sh" "$TOOLS" || fail "tests/k8s/install-tools.sh failed"
KUBECTL=$TOOLS/kubectl
VERSION=$(sed -n 's/^project(shardlm VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
[ -n "$VERSION" ] || fail "no project VERSION in CMakeLists.txt"

# ---- 1. the sources ----
yamllint -s -c "$SRC/deploy/k8s/.yamllint" "$SRC/deploy/k8s" || fail "yamllint on deploy/k8s"
ok "yamllint: deploy/k8s"

# ---- 2. the overlays, rendered from a copy with its own secrets ----
cp -r "$SRC/deploy/k8s" "$WORK/k8s"
rm -rf "$WORK/k8s/base/secrets"
"$WORK/k8s/make-secrets.sh" >/dev/null
render() {  # render DIR OUT: kustomize's output, or its error on stderr
  (cd "$TOOLS" && "$KUBECTL" kustomize "$1") >"$2" 2>"$WORK/render.err" || { cat "$WORK/render.err" >&2; return 1; }
}
check() {  # check FLAVOUR TAG FILE
  (cd "$TOOLS" && node "$HERE/manifests.mjs" validate "$@")
}
for o in cpu gpu; do
  tag=$VERSION
  [ "$o" = cpu ] || tag=$VERSION-cuda12
  render "$WORK/k8s/overlays/$o" "$WORK/$o.yaml" || fail "kustomize could not render overlays/$o"
  yamllint -s -d '{extends: default, rules: {line-length: disable, indentation: {indent-sequences: whatever}, document-start: disable}}' \
    "$WORK/$o.yaml" || fail "yamllint on the rendered overlays/$o"
  check "$o" "$tag" "$WORK/$o.yaml" || fail "overlays/$o does not validate"
done
grep -q "value: \"4\"" "$WORK/cpu.yaml" || fail "cpu: SHARDLM_WORLD_SIZE is not the string \"4\""

# ---- 3. broken overlays are refused, each naming its fault ----
# refused NAME PHRASE FLAVOUR KUSTOMIZATION: an overlay on the copied base
refused() {
  local name=$1 phrase=$2 flavour=$3 d=$WORK/k8s/overlays/bad-$1
  mkdir -p "$d"
  printf '%s\n' "$4" >"$d/kustomization.yaml"
  render "$d" "$WORK/bad-$name.yaml" || fail "bad-$name: kustomize refused it, expected the validator to"
  if check "$flavour" "$VERSION" "$WORK/bad-$name.yaml" 2>"$WORK/bad-$name.err"; then
    fail "bad-$name: validated, expected a refusal naming '$phrase'"
  fi
  grep -q -- "$phrase" "$WORK/bad-$name.err" || fail "bad-$name: refused, but not for '$phrase': $(cat "$WORK/bad-$name.err")"
}
repl='replacements:
  - source: {kind: StatefulSet, name: shardlm, fieldPath: spec.replicas}
    targets:
      - select: {kind: StatefulSet, name: shardlm}
        fieldPaths: ["spec.template.spec.containers.[name=shardlm].env.[name=SHARDLM_WORLD_SIZE].value"]'
img="images: [{name: shardlm, newTag: \"$VERSION\"}]"
refused three "replicas 3 is not a power of two" cpu "resources: [../../base]
replicas: [{name: shardlm, count: 3}]
$repl
$img"
refused noreplace 'SHARDLM_WORLD_SIZE is "set-by-the-overlay" but replicas is 8' cpu "resources: [../../base]
replicas: [{name: shardlm, count: 8}]
$img"
refused latest "pin a tag (not latest)" cpu "resources: [../../base]
$repl
images: [{name: shardlm, newTag: latest}]"
refused sharedclaim "a claim shared by every pod" cpu "resources: [../../base]
$repl
$img
patches:
  - target: {kind: StatefulSet, name: shardlm}
    patch: |-
      - op: add
        path: /spec/template/spec/volumes/-
        value: {name: models, persistentVolumeClaim: {claimName: shardlm-models}}"
refused httpprobe "expected exec \[shardlm-entrypoint, probe\]" cpu "resources: [../../base]
$repl
$img
patches:
  - target: {kind: StatefulSet, name: shardlm}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe
        value: {httpGet: {path: /health, port: 8080}}"
refused schema "must be integer" cpu "resources: [../../base]
$repl
$img
patches:
  - target: {kind: StatefulSet, name: shardlm}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/readinessProbe/periodSeconds
        value: five"
refused nogpu "gpu: no nvidia.com/gpu limit" gpu "resources: [../../base]
$repl
$img"
ok "refused: replicas 3, a missing replacement, :latest, a shared claim, an httpGet probe, a schema type error, gpu without GPUs"
echo "k8s_manifests: PASS"

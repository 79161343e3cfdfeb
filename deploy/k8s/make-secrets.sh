#!/bin/sh
# make-secrets.sh [--force] [DIR] - writes the cluster token and the API key
# that base/kustomization.yaml turns into the Secret shardlm-secrets (DIR
# defaults to base/secrets, which git ignores): 32 random bytes each, as
# hex, readable by their owner only. Existing files are kept unless --force.
set -eu
force=
[ "${1:-}" != --force ] || { force=1; shift; }
dir=${1:-$(dirname "$0")/base/secrets}
mkdir -p "$dir"
umask 077
for f in cluster-token api-key; do
  if [ -s "$dir/$f" ] && [ -z "$force" ]; then echo "make-secrets: keeping $dir/$f"; continue; fi
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$dir/$f.new"
  mv "$dir/$f.new" "$dir/$f"
  echo "make-secrets: wrote $dir/$f"
done

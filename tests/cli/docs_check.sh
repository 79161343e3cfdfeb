#!/usr/bin/env bash
# docs_check.sh SHARDLM_BIN SRC_DIR - docs/CLI.md against the flag table:
# the generated part must equal `shardlm help --markdown`, and the code block
# under each command's heading must equal that command's `--help`. Fails,
# with a diff, on any drift; regenerate with scripts/cli-docs.sh.
set -euo pipefail
BIN=${1:?usage: docs_check.sh SHARDLM_BIN SRC_DIR}
SRC=${2:?usage: docs_check.sh SHARDLM_BIN SRC_DIR}
DOC=$SRC/docs/CLI.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# the part between the markers
awk '/^<!-- BEGIN flags/{on=1; next} /^<!-- END flags -->/{on=0} on' "$DOC" >"$tmp/doc.md"
"$BIN" help --markdown >"$tmp/gen.md"
if [ ! -s "$tmp/doc.md" ]; then
  echo "docs_check: $DOC has no '<!-- BEGIN flags' ... '<!-- END flags -->' part" >&2
  exit 1
fi
if ! diff -u "$tmp/doc.md" "$tmp/gen.md" >&2; then
  echo "docs_check: $DOC's flag tables differ from \`shardlm help --markdown\` (run scripts/cli-docs.sh)" >&2
  fail=1
fi

# each command's code block against its --help, in the file as a whole
for cmd in generate serve worker bench launch bench-matmul; do
  awk -v h="### $cmd" '$0 == h {s=1; next} s == 1 && /^```$/ {s=2; next} s == 2 && /^```$/ {exit} s == 2' \
    "$DOC" >"$tmp/$cmd.doc"
  "$BIN" "$cmd" --help >"$tmp/$cmd.help"
  if [ ! -s "$tmp/$cmd.doc" ] || ! diff -u "$tmp/$cmd.doc" "$tmp/$cmd.help" >&2; then
    echo "docs_check: $DOC's \`### $cmd\` block differs from \`shardlm $cmd --help\`" >&2
    fail=1
  fi
done
# docs/API.md's serve table names every flag of `serve --help`
for f in $(grep -o -- '--[a-z][a-z0-9-]*' "$tmp/serve.help" | sort -u); do
  [ "$f" = --help ] && continue
  if ! grep -q -- "^| \`\(-., \)\?$f[ \`]" "$SRC/docs/API.md"; then
    echo "docs_check: docs/API.md's serve flag table lacks $f" >&2
    fail=1
  fi
done
[ $fail = 0 ] && echo "docs_check: docs/CLI.md matches --help for generate, serve, worker, bench, launch, bench-matmul"
exit $fail

#!/usr/bin/env bash
# test.sh - the README's test command: installs what is missing, builds
# three ways and runs the tests:
#   release      every test, -Werror
#   asan         every test under AddressSanitizer + UBSan
#   fuzz         every libFuzzer harness for ~25 s (scripts/fuzz.sh)
#   tsan         ring collectives (TCP and shared memory), thread pool, threaded generation and serve under
#                ThreadSanitizer (tests/tsan/: Criterion cannot run under TSan)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

scripts/build.sh release -DSHARDLM_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
ctest --test-dir build/release --output-on-failure
# GPU tests pass by skipping on a machine without a device: say so out loud.
ctest --test-dir build/release -R 'cuda' -V 2>&1 | grep -E 'SKIP|\[(PASS|FAIL)\]' | sort | uniq -c || true

scripts/build.sh asan -DSHARDLM_WERROR=ON -DSHARDLM_SANITIZE=address,undefined -DSHARDLM_CUDA=OFF
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build/asan --output-on-failure

# Every libFuzzer harness for a short run (clang, ASan + UBSan; docs/FUZZING.md):
# fails on any crash, leak or hang found.
scripts/fuzz.sh "${FUZZ_SECONDS:-25}"

# No MPI under TSan: libmpich pulls in UCX, whose madvise hook (libucm) crashes
# TSan-instrumented threads at exit. MPI runs in the release and ASan builds.
scripts/build.sh tsan -DSHARDLM_WERROR=ON -DSHARDLM_SANITIZE=thread -DSHARDLM_CUDA=OFF -DSHARDLM_MPI=OFF
ctest --test-dir build/tsan --output-on-failure

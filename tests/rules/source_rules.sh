#!/usr/bin/env bash
# Rules the security review relies on, checked over the daemon's sources so
# that a change breaking one fails the build's tests (docs/security.md):
#  - no shell: helper programs run from an argv (RunProcess, Spawn), never
#    through system(3), popen(3) or "sh -c" (a container's PID 1, inside
#    its namespaces, runs a constant script: container/runtime_spec.cc);
#  - secrets compared in constant time: client and access tokens go through
#    CRYPTO_memcmp, never ==, memcmp or strcmp on their hashes;
#  - randomness for secrets from getrandom(2) only (core/random), never
#    rand(3), random(3) or std::mt19937.
set -euo pipefail
src=${1:?usage: source_rules.sh SRC_DIR}
fail=0
check() {  # check DESCRIPTION PATTERN [EXCLUDE]
  local hits
  hits=$(grep -rnE "$2" "$src" --include='*.cc' --include='*.h' || true)
  [ -n "${3:-}" ] && hits=$(grep -vE "$3" <<<"$hits" || true)
  if [ -n "$hits" ]; then
    echo "FAIL: $1:"
    echo "$hits"
    fail=1
  fi
}
check "a shell runs a command" '\b(system|popen)[[:space:]]*\(|"(/bin/)?sh",[[:space:]]*"-c"' \
  '^[^:]*/container/runtime_spec\.cc:[0-9]+:[[:space:]]*\{"args", \{"/bin/sh", "-c", ContainerInitScript\(\)\}\},$'
check "a token hash is compared in variable time" 'token_sha256[^;]*(==|!=)|(memcmp|strcmp)[^;]*token' 'CRYPTO_memcmp'
check "a secret may come from a non-cryptographic generator" '\b(s?rand|random)\(|mt19937'
grep -q 'CRYPTO_memcmp' "$src/engine/destroy.cc" || { echo "FAIL: client tokens are not compared with CRYPTO_memcmp"; fail=1; }
grep -q 'getrandom' "$src/core/random.cc" || { echo "FAIL: core/random does not use getrandom"; fail=1; }
[ "$fail" = 0 ] && echo "source rules hold"
exit "$fail"

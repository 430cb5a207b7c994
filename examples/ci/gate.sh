#!/usr/bin/env bash
# The CI gate edgeship's own test suite runs too: export (or reuse) a bundle, re-check its parity
# with a JUnit report, and (with a baseline) gate latency.
#
#   gate.sh MODEL_OR_BUNDLE OUT_DIR [export options...]
#
# Exit 0: every gate passed; 1: a gate failed (parity drift, latency regression); 2: bad input.
set -euo pipefail
src=$1; out=$2; shift 2
mkdir -p "$out"
edgeship=${EDGESHIP:-edgeship}
if [[ -d $src || $src == *.edgeship.zip ]]; then
  bundle=$src
else
  bundle=$out/model.edgeship
  $edgeship export "$src" -o "$bundle" "$@"
fi
$edgeship check "$bundle" --junit "$out/parity.xml" --json "$out/parity.json"
if [[ -n ${BASELINE:-} ]]; then
  $edgeship profile "$bundle" --json "$out/profile.json" --html "$out/profile.html" \
    --baseline "$BASELINE" --max-regression "${MAX_REGRESSION:-10%}"
fi
echo "gates passed: $bundle"

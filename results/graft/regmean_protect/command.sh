#!/usr/bin/env bash
# The tuned RegMean class A graft with the task-vector methods' protection (first 20% of layers keep the
# recipient's weights), scored on validation beside its controls, donor and recipient. Compare with the
# same graft unprotected (the regmean default) in results/tune_class_a_regmean (donor weight 20).
set -euo pipefail
cd "$(dirname "$0")/../../.."
VADASM=${VADASM:-.venv/bin/vadasm}
"$VADASM" graft testbed:llava-smollm2 testbed:smollm2-arith out/regmean-protect20 --base testbed:smollm2 \
  --merge-method regmean --donor-data easyvqa --recipient-data arith --regmean-donor-weight 20 --protect 0.2 \
  --eval easyvqa --eval arith --eval-split val --eval-limit 200 --force --json -q \
  > results/graft/regmean_protect/result.json

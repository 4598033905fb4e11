#!/usr/bin/env bash
# Class A graft tuning on the testbed with the RegMean language merge: the weight of the donor's term
# (how much reproducing the LLaVA donor on easy-vqa counts against the recipient on arithmetic), with
# each model's Gram matrices taken on its own task's train split; validation split only.
set -euo pipefail
cd "$(dirname "$0")/../.."
VADASM=${VADASM:-.venv/bin/vadasm}
LIMIT=${LIMIT:-200}
THREADS=${THREADS:-2}
"$VADASM" tune \
  --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2 \
  --set merge_method=regmean --set donor_data=easyvqa --set recipient_data=arith \
  --param regmean_donor_weight=1,3,10,20,30,50@1 --search grid \
  --tasks easyvqa,arith --limit "$LIMIT" --seed 0 --threads "$THREADS" \
  --out results/tune_class_a_regmean --output out/smollm2-sees-regmean --force

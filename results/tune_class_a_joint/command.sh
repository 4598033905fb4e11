#!/usr/bin/env bash
# Class A graft tuning on the testbed, jointly over beta, merge method and density
# (SmolLM2 LLaVA donor -> arithmetic SmolLM2, base SmolLM2), validation split only.
# task_arithmetic ignores density, so its candidates repeat once per density value.
set -euo pipefail
cd "$(dirname "$0")/../.."
VADASM=${VADASM:-.venv/bin/vadasm}
LIMIT=${LIMIT:-200}
THREADS=${THREADS:-2}
"$VADASM" tune \
  --donor testbed:llava-smollm2 --recipient testbed:smollm2-arith --base testbed:smollm2 \
  --param beta=1:2@1 --grid-points 5 --param merge_method=task_arithmetic,ties \
  --param density=0.5,0.9 --tasks easyvqa,arith --limit "$LIMIT" --seed 0 --threads "$THREADS" \
  --out results/tune_class_a_joint --output out/smollm2-sees-joint --force

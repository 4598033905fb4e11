"""Train SmolLM2 into the class C reader and save it even when the criterion is missed (to measure the miss).

`vadasm.testbed.reader.build_reader` is what a build calls (it writes nothing on a miss); this script is
the one run behind results/class_c_recipient/README.md: same training, then the model is saved under
`testbed_home()/smollm2-reader` (criterion met) or `smollm2-reader.unmet` (missed), with its record.
Usage: python results/class_c_recipient/train_reader.py [steps] [batch_size] [eval_every]
"""

import json
import sys
from dataclasses import asdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vadasm.testbed.paths import artefact_dir, testbed_home
from vadasm.testbed.reader import ARTEFACT, ReaderRecipe, train_reader

torch.set_num_threads(2)
steps, batch, every = (int(a) for a in (sys.argv[1:] + ["60", "4", "30"][len(sys.argv) - 1:])[:3])
recipe = ReaderRecipe(steps=steps, round_steps=steps, eval_every=every, batch_size=batch, val_items=32, lr=2e-4)
base = artefact_dir("smollm2")
tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
metrics = train_reader(model, tokenizer, recipe)
rounds = metrics.pop("rounds")
criterion, budget = metrics.pop("criterion"), metrics.pop("budget")
out = testbed_home() / (ARTEFACT if rounds.met else ARTEFACT + ".unmet")
model.save_pretrained(out)
tokenizer.save_pretrained(out)
record = {"recipe": asdict(recipe), "training": rounds.record(criterion, budget), "metrics": metrics}
(out / "reader_training.json").write_text(json.dumps(record, indent=1) + "\n")
print(json.dumps(record["training"]), "->", out)

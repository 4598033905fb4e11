"""SVD blend on the offline testbed's SmolLM2 and its arithmetic fine-tune (slow; needs the testbed)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vadasm.io import Checkpoint
from vadasm.testbed.paths import artefact_dir, is_built

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (is_built("smollm2") and is_built("smollm2-arith")),
                       reason="testbed not built (vadasm testbed build)"),
]


def test_real_pair_sweep_loads_and_alpha_one_is_the_fine_tune(tmp_path, vadasm):
    before, after = artefact_dir("smollm2"), artefact_dir("smollm2-arith")
    out = tmp_path / "blends"
    vadasm("blend", "--before", before, "--after", after, "--alphas", "0,0.5,1", "--output", out, "--quiet",
           "--include", "re:layers\\.(0|1)\\.")
    meta = json.loads((out / "alpha_0.5" / "svd_blend_meta.json").read_text())
    assert len(meta["blended_keys"]) == 14  # 7 matrices in each of layers 0 and 1
    mine, reference = Checkpoint.open(out / "alpha_1.0"), Checkpoint.open(after)
    assert sorted(mine.keys()) == sorted(reference.keys())
    assert all(torch.equal(mine.get(k), reference.get(k)) for k in reference.keys())
    tokenizer = AutoTokenizer.from_pretrained(out / "alpha_0.0")
    ids = tokenizer("Question: What is 12 + 7?\nAnswer:", return_tensors="pt")
    for label in ("alpha_0.0", "alpha_0.5"):
        model = AutoModelForCausalLM.from_pretrained(out / label)
        assert torch.isfinite(model(**ids).logits).all()

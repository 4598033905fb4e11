"""The validation gate fires on a crafted bad merge (real merges of a tiny model that learnt a task)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from pico_models import make_text_model, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.eval.gate import record_in_config, validation_gate
from vadasm.tune import GraftBuilder, HarnessObjective, MergeBuilder, make_optimizer, space_from_specs, tune
from vadasm.tune.objective import substitute


def successor_batch(seed: int, n: int = 32, length: int = 12) -> torch.Tensor:
    """Sequences where each token is the previous one + 1 (ids 3..92): a skill a pico model learns fast."""
    start = torch.randint(0, 90, (n, 1), generator=torch.Generator().manual_seed(seed))
    return 3 + (start + torch.arange(length)) % 90


def train_successor(folder: Path, steps: int = 120) -> Path:
    model = AutoModelForCausalLM.from_pretrained(folder)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        ids = successor_batch(1000 + step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.save_pretrained(folder)
    return folder


@dataclass
class SuccessorObjective(HarnessObjective):
    """The harness objective with its scorer replaced by next-token accuracy on the successor task."""

    def score(self, folder: Path, split: str, controls: bool) -> dict[str, float]:
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        ids = successor_batch({"val": 1, "test": 2}[split])
        with torch.no_grad():
            predicted = model(input_ids=ids).logits[:, :-1].argmax(-1)
        return {"successor/text": (predicted == ids[:, 1:]).float().mean().item()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    torch.manual_seed(0)
    recipient = train_successor(make_text_model(root / "recipient", "llama"))
    noise = perturbed_copy(recipient, root / "noise", scale=0.3, seed=5)
    template = {"merge_method": "task_arithmetic", "base_model": str(recipient),
                "models": [{"model": str(noise), "parameters": {"weight": "${beta}"}}]}
    return root, MergeBuilder(template, str(recipient), zero={"beta": 0.0})


def test_gate_fires_on_a_crafted_bad_merge(trained, tmp_path):
    root, builder = trained
    objective = SuccessorObjective(builder, {"successor": 1.0})
    recipient = objective(None, "val")
    assert recipient.objective > 0.9  # the recipient really learnt the task
    bad = objective({"beta": 1.0}, "val", controls=True)  # adds a large random "task vector"
    gate = validation_gate(bad.scores, recipient.scores)
    assert not gate.passed
    assert gate.checks[0].kind == "text" and gate.checks[0].reference_name == "recipient"
    assert "FAILED" in gate.line() and "successor" in gate.line()
    fine = objective({"beta": 0.0}, "val", controls=True)
    assert validation_gate(fine.scores, recipient.scores).passed
    # the verdict lands in the merged model's vadasm_config.json next to the merge's provenance
    builder.build({"beta": 1.0}, tmp_path / "bad")
    record_in_config(tmp_path / "bad", "validation", {"scores": bad.scores, "gate": gate.to_dict()})
    config = json.loads((tmp_path / "bad" / "vadasm_config.json").read_text())
    assert config["kind"] == "merge" and config["validation"]["gate"]["passed"] is False


def test_tuning_a_harmful_delta_keeps_change_nothing(trained):
    _, builder = trained
    space = space_from_specs(["beta=0:1@0.5"])
    result = tune(SuccessorObjective(builder, {"successor": 1.0}), space, make_optimizer("grid", space, grid_points=3),
                  zero_params=builder.zero_params(), progress=False)
    assert result.best.kind == "recipient"  # beta=0 only ties it; every beta > 0 is worse
    assert not result.improved_over_recipient and result.gate.passed
    assert result.reference("default").objective < result.reference("recipient").objective


def test_vision_gate_compares_with_the_blind_control():
    gate = validation_gate({"easyvqa/image": 0.55, "easyvqa/blind": 0.67, "easyvqa/shuffled": 0.6}, None)
    assert not gate.passed and gate.checks[0].reference_name == "blind control"
    assert validation_gate({"easyvqa/image": 0.9, "easyvqa/blind": 0.67}, None).passed


def test_recipe_placeholders_must_match_the_parameters(trained):
    _, builder = trained
    builder.check(["beta"])
    with pytest.raises(VadasmError, match="placeholders"):
        builder.check(["beta", "density"])
    assert substitute({"a": "${x}", "b": ["layer-${x}"]}, {"x": 0.5}) == {"a": 0.5, "b": ["layer-0.5"]}
    with pytest.raises(VadasmError, match="graft has no option"):
        GraftBuilder("donor", "recipient").check(["beta", "bogus"])

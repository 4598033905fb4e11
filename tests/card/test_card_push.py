"""Cards hold exactly the measured numbers and loading code that runs; push refuses card-less models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.tiny_vlm import make_text_lm
from pico_models import perturbed_copy
from vadasm.card import CARD_MARKER, render_card, write_card
from vadasm.card.render import fmt
from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.eval.gate import record_in_config, validation_gate
from vadasm.hub import push
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge

VAL = {"arith/text": 0.4375, "easyvqa/image": 0.8125, "easyvqa/blind": 0.6875}
RECIPIENT_VAL = {"arith/text": 0.5, "easyvqa/blind": 0.6875}
TEST = {"winner": {"params": {"beta": 0.3}, "objective": 0.61, "scores": {"arith/text": 0.3984}},
        "recipient": {"params": None, "objective": 0.7, "scores": {"arith/text": 0.4219}}}
EVAL = {"models": ["merged"], "tasks": ["perplexity"], "split": "test", "limit": None, "seed": 0, "decoding": {},
        "item_ids": {}, "seconds": 1.0,
        "scores": [{"model": "merged", "task": "perplexity", "condition": "text", "metric": "perplexity",
                    "value": 123.4567, "n": 2048, "groups": {}, "predictions": None}]}


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    base = make_text_lm(root / "base")
    ft = perturbed_copy(base, root / "ft", scale=0.01)
    recipe = recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(base),
                               "models": [{"model": str(ft), "parameters": {"weight": 0.3}}]})
    out = root / "merged"
    run_merge(recipe, out, MergeOptions(progress=False))
    gate = validation_gate(VAL, RECIPIENT_VAL)
    record_in_config(out, "validation", {"split": "val", "scores": VAL, "recipient": RECIPIENT_VAL,
                                         "gate": gate.to_dict()})
    record_in_config(out, "test", {"split": "test", **TEST})
    (root / "eval.json").write_text(json.dumps(EVAL))
    return out, root / "eval.json"


def measured_cells(card: str) -> list[str]:
    """The value column of every results table in the card."""
    section = card.split("## Measured results")[1].split("## Hardware")[0]
    return [row.split("|")[5].strip() for row in section.splitlines()
            if row.startswith("| ") and not row.startswith("| model") and row.count("|") == 7]


def test_card_holds_exactly_the_measured_numbers(merged):
    model, eval_file = merged
    card = render_card(model, [eval_file])
    expected = [fmt(VAL[k], "score") for k in sorted(VAL)] + [fmt(RECIPIENT_VAL[k], "score")
                                                             for k in sorted(RECIPIENT_VAL)]
    expected += [fmt(TEST["winner"]["scores"]["arith/text"], "score"),
                 fmt(TEST["recipient"]["scores"]["arith/text"], "score"), fmt(123.4567, "perplexity")]
    assert sorted(measured_cells(card)) == sorted(expected)
    assert "43.8" in card and "123.46" in card and "| 2048 |" in card
    # the gate failed (arith 0.4375 < recipient 0.5) and the card says so, with the numbers
    assert "validation gate: FAILED" in card and "arith: 0.4375 < recipient 0.5000" in card
    assert "task_arithmetic" in card and "weight: 0.3" in card


def test_card_loading_code_runs(merged):
    model, _ = merged
    card = render_card(model)
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert f'from_pretrained("{model}")' in code
    exec(compile(code, "card", "exec"), {})  # loads the merged model with stock transformers and generates


def test_card_without_measurements_says_so_and_invents_nothing(tmp_path):
    model = make_text_lm(tmp_path / "m")
    (model / "vadasm_config.json").write_text(json.dumps({"tool": "vadasm", "kind": "merge", "recipe": {}}))
    card = render_card(model)
    assert "No measurements are recorded" in card and measured_cells(card) == []
    (model / "README.md").write_text("hand-written\n")
    with pytest.raises(VadasmError, match="was not written by `vadasm card`"):
        write_card(model)
    assert CARD_MARKER in write_card(model, force=True).read_text()
    with pytest.raises(VadasmError, match="vadasm_config.json: not found"):
        render_card(tmp_path)


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_refuses_a_model_without_a_card(tmp_path):
    model = make_text_lm(tmp_path / "m")
    with pytest.raises(VadasmError, match="no model card"):
        push(model, "me/m", dry_run=True)


def test_push_dry_run_lists_files_and_touches_nothing(merged, monkeypatch):
    model, _ = merged
    write_card(model, force=True)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    plan = push(model, "me/merged", private=True, dry_run=True)
    assert "README.md" in plan.files and "model.safetensors" in plan.files and "vadasm_config.json" in plan.files
    assert plan.dry_run and plan.gate_passed is False
    assert any("failed its validation gate" in line for line in plan.lines())
    with pytest.raises(VadasmError, match="write it as user/name"):
        push(model, "no-slash", dry_run=True)


def test_push_creates_the_repo_and_uploads_the_folder(merged):
    model, _ = merged
    write_card(model, force=True)
    api = RecordingApi()
    plan = push(model, "me/merged", private=True, api=api)
    (first, create), (second, upload) = api.calls
    assert (first, second) == ("create_repo", "upload_folder")
    assert create == {"repo_id": "me/merged", "private": True, "repo_type": "model", "exist_ok": True}
    assert upload["folder_path"] == str(model) and upload["repo_id"] == "me/merged"
    assert plan.url == "https://huggingface.co/me/merged" and not plan.dry_run


def test_push_without_token_names_the_fix(merged, monkeypatch):
    model, _ = merged
    write_card(model, force=True)
    monkeypatch.setattr("vadasm.hub.hub_token", lambda: None)
    with pytest.raises(VadasmError, match="set HF_TOKEN or run `hf auth login`"):
        push(model, "me/merged")


def test_card_and_push_commands(merged):
    model, eval_file = merged
    _register_subcommands()
    runner = CliRunner()
    done = runner.invoke(app, ["card", str(model), "--eval", str(eval_file), "--force", "--repo", "me/merged"])
    assert done.exit_code == 0, done.output
    assert "validation gate: FAILED" in done.output
    assert 'from_pretrained("me/merged")' in (Path(model) / "README.md").read_text()
    dry = runner.invoke(app, ["push", str(model), "--repo", "me/merged", "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.output)["repo"] == "me/merged"

"""Staged recipes (mergekit-multi): several `---` documents, later ones using earlier ones by name."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from fuzz_cases import Case, make_models, run_case, run_cli
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.merge.recipe_yaml import MAX_ALIASES, MAX_DOCUMENTS, RecipeYamlError, load_yaml_text

QUIET = MergeOptions(progress=False)


@pytest.fixture
def models(tmp_path):
    return make_models(tmp_path / "models")


def staged(models) -> str:
    """The final merge first in the file: the order of the documents must not matter."""
    return f"""\
merge_method: task_arithmetic
base_model: {models['base']}
models:
  - model: second-merge
    parameters: {{weight: 0.5}}
  - model: {models['ft1']}
    parameters: {{weight: 0.5}}
---
name: second-merge
merge_method: slerp
base_model: first-merge
models:
  - model: {models['ft2']}
parameters: {{t: 0.3}}
---
name: first-merge
merge_method: linear
models:
  - model: {models['base']}
  - model: {models['ft1']}
parameters: {{weight: 0.5}}
"""


def by_hand(models, folder):
    """The same three merges run one by one with run_merge."""
    first = run_merge(recipe_from_dict({"merge_method": "linear", "parameters": {"weight": 0.5}, "models": [
        {"model": str(models["base"])}, {"model": str(models["ft1"])}]}), folder / "first", QUIET).output
    second = run_merge(recipe_from_dict({"merge_method": "slerp", "base_model": first, "parameters": {"t": 0.3},
                                         "models": [{"model": str(models["ft2"])}]}), folder / "second", QUIET)
    final = run_merge(recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(models["base"]),
                                        "models": [{"model": second.output, "parameters": {"weight": 0.5}},
                                                   {"model": str(models["ft1"]), "parameters": {"weight": 0.5}}]}),
                      folder / "final", QUIET)
    return {name: load_file(f"{path}/model.safetensors") for name, path in
            (("first-merge", first), ("second-merge", second.output), ("final", final.output))}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def test_stages_run_in_dependency_order_and_only_the_final_output_remains(tmp_path, models):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    out = tmp_path / "out" / "merged"
    outcome = run_cli(["merge", str(recipe), str(out), "--quiet"])
    assert outcome.code == 0, outcome.stderr
    want = by_hand(models, tmp_path / "by_hand")
    assert_same(load_file(out / "model.safetensors"), want["final"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["merged"]  # intermediate folder removed


def test_stage_folders_of_killed_runs_are_removed(tmp_path, models):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    dead = tmp_path / f".merged.vadasm-stages-{2**22 + 12345}"  # above Linux's pid_max: no such process
    (dead / "first-merge").mkdir(parents=True)
    outcome = run_cli(["merge", str(recipe), str(tmp_path / "merged"), "--quiet"])
    assert outcome.code == 0, outcome.stderr
    assert not dead.exists()


def test_intermediate_dir_keeps_each_named_merge(tmp_path, models):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    kept = tmp_path / "stages"
    outcome = run_cli(["merge", str(recipe), str(tmp_path / "merged"), "--quiet", "--intermediate-dir", str(kept)])
    assert outcome.code == 0, outcome.stderr
    want = by_hand(models, tmp_path / "by_hand")
    for name in ("first-merge", "second-merge"):
        assert_same(load_file(kept / name / "model.safetensors"), want[name])
    assert_same(load_file(tmp_path / "merged" / "model.safetensors"), want["final"])


def test_a_document_the_final_merge_does_not_use_is_skipped_without_intermediate_dir(tmp_path, models):
    unused = f"name: unused\nmerge_method: linear\nmodels: [{{model: {models['ft1']}}}, {{model: {models['ft2']}}}]\n"
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models) + "---\n" + unused + "---\n")  # a trailing `---` is an empty document
    outcome = run_cli(["merge", str(recipe), str(tmp_path / "merged")])
    assert outcome.code == 0, outcome.stderr
    assert "skipped 'unused'" in outcome.stdout
    assert outcome.stdout.count("merged ") == 3


def test_with_every_document_named_the_one_no_other_uses_is_final(tmp_path, models):
    """With every document named, the one no other uses is the final one."""
    text = staged(models).replace("merge_method: task_arithmetic", "name: last\nmerge_method: task_arithmetic", 1)
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(text)
    outcome = run_cli(["merge", str(recipe), str(tmp_path / "merged"), "--quiet"])
    assert outcome.code == 0, outcome.stderr
    want = by_hand(models, tmp_path / "by_hand")
    assert_same(load_file(tmp_path / "merged" / "model.safetensors"), want["final"])


def doc(name: str | None, base: str, *models: str, method: str = "task_arithmetic") -> str:
    lines = ([f"name: {name}"] if name else []) + [f"merge_method: {method}", f"base_model: {base}", "models:"]
    return "\n".join(lines + [f"  - model: {m}\n    parameters: {{weight: 0.5}}" for m in models]) + "\n"


BAD = {
    "cycle": lambda m: "---\n".join([doc("a", m["base"], "b"), doc("b", m["base"], "a"), doc(None, m["base"], "a")]),
    "self": lambda m: doc("a", m["base"], "a") + "---\n" + doc(None, m["base"], "a"),
    "unknown_name": lambda m: doc("a", m["base"], m["ft1"]) + "---\n" + doc(None, m["base"], "first-merge"),
    "duplicate_name": lambda m: doc("a", m["base"], m["ft1"]) + "---\n" + doc("a", m["base"], m["ft2"]),
    "two_unnamed": lambda m: doc(None, m["base"], m["ft1"]) + "---\n" + doc(None, m["base"], m["ft2"]),
    "no_final": lambda m: doc("a", m["base"], m["ft1"]) + "---\n" + doc("b", m["base"], m["ft2"]),
    "bad_name": lambda m: doc("../up", m["base"], m["ft1"]) + "---\n" + doc(None, m["base"], m["ft2"]),
    "bad_document": lambda m: doc("a", m["base"], m["ft1"]) + "---\n- not a mapping\n",
    "bad_recipe": lambda m: doc("a", m["base"], m["ft1"]) + "---\n" + doc(None, m["base"], "a", method="nope"),
}
EXPECTED = {
    "cycle": "in a cycle: a -> b -> a", "self": "in a cycle: a -> a",
    "unknown_name": "'first-merge' is neither a document name (a) nor a model folder",
    "duplicate_name": "documents 1 and 2 are both named 'a'", "two_unnamed": "documents 1 and 2 have no name",
    "no_final": "cannot tell the final merge", "bad_name": "is not usable as a folder name",
    "bad_document": "document 2 is not a YAML mapping", "bad_recipe": "document 2: unknown merge method",
}


@pytest.mark.parametrize("cause", sorted(BAD))
def test_a_bad_staged_recipe_is_one_line_and_writes_nothing(tmp_path, models, cause):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(BAD[cause](models))
    kept = tmp_path / "stages"
    out = tmp_path / "merged"
    case = Case(["merge", str(recipe), str(out), "--quiet", "--intermediate-dir", str(kept)],
                inputs=list(models.values()) + [recipe], output=out, mention=str(recipe))
    outcome = run_case(case)
    assert outcome.problems == []
    assert outcome.code == 2
    assert EXPECTED[cause] in outcome.stderr
    assert not kept.exists() or not any(kept.iterdir())


def test_flags_that_override_a_recipe_are_refused_for_a_staged_one(tmp_path, models):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    out = tmp_path / "merged"
    outcome = run_case(Case(["merge", str(recipe), str(out), "--param", "lambda=2"], inputs=[recipe], output=out))
    assert outcome.problems == [] and outcome.code == 2
    assert "--param cannot apply to a recipe of 3 documents" in outcome.stderr


def test_an_existing_intermediate_output_is_refused_before_any_merge(tmp_path, models):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    kept = tmp_path / "stages"
    (kept / "second-merge").mkdir(parents=True)
    (kept / "second-merge" / "notes.txt").write_text("mine")
    out = tmp_path / "merged"
    outcome = run_case(Case(["merge", str(recipe), str(out), "--intermediate-dir", str(kept)], inputs=[recipe],
                            output=out))
    assert outcome.problems == [] and outcome.code == 2
    assert "second-merge" in outcome.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["second-merge"]  # first-merge was not run


@pytest.mark.parametrize("where", ["same", "holds", "stage"])
def test_an_output_overlapping_the_intermediate_dir_is_refused(tmp_path, models, where):
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(staged(models))
    out, kept = {"same": (tmp_path / "x", tmp_path / "x"), "holds": (tmp_path / "x", tmp_path / "x" / "stages"),
                 "stage": (tmp_path / "x" / "first-merge", tmp_path / "x")}[where]
    outcome = run_case(Case(["merge", str(recipe), str(out), "--intermediate-dir", str(kept)], inputs=[recipe],
                            output=out))
    assert outcome.problems == [] and outcome.code == 2
    assert "is, holds or is a stage of --intermediate-dir" in outcome.stderr
    assert not kept.exists()


def test_yaml_limits_hold_over_all_documents():
    assert load_yaml_text("a: 1\n---\nb: 2\n---\n", all_documents=True) == [{"a": 1}, {"b": 2}, None]
    with pytest.raises(RecipeYamlError, match=f"more than {MAX_DOCUMENTS} documents"):
        load_yaml_text("---\na: 1\n" * (MAX_DOCUMENTS + 1), all_documents=True)
    half = MAX_ALIASES // 2 + 1  # within the limit in each document, over it in the file
    document = "x: &x 1\ny: [" + ", ".join(["*x"] * half) + "]\n"
    load_yaml_text(document, all_documents=True)
    with pytest.raises(RecipeYamlError, match=f"more than {MAX_ALIASES} aliases"):
        load_yaml_text(document + "---\n" + document, all_documents=True)
    with pytest.raises(RecipeYamlError, match="key 'a' appears twice"):
        load_yaml_text("a: 1\n---\na: 1\na: 2\n", all_documents=True)


def test_a_stage_name_with_a_lora_adapter(tmp_path, models):
    """`NAME+LORA`: the adapter is folded into the stage's output, as into any model folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(7)
    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(models["base"]), LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(adapter)
    first = f"name: first\nmerge_method: linear\nmodels: [{{model: {models['ft1']}}}, {{model: {models['ft2']}}}]\n"
    final = (f"merge_method: task_arithmetic\nbase_model: {models['base']}\n"
             f"models: [{{model: first+{adapter}, parameters: {{weight: 0.5}}}}]\n")
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(first + "---\n" + final)
    outcome = run_cli(["merge", str(recipe), str(tmp_path / "merged"), "--quiet"])
    assert outcome.code == 0, outcome.stderr
    stage = run_merge(recipe_from_dict({"merge_method": "linear", "models": [
        {"model": str(models["ft1"])}, {"model": str(models["ft2"])}]}), tmp_path / "first", QUIET).output
    want = run_merge(recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(models["base"]),
                                       "models": [{"model": f"{stage}+{adapter}", "parameters": {"weight": 0.5}}]}),
                     tmp_path / "by_hand", QUIET).output
    assert_same(load_file(tmp_path / "merged" / "model.safetensors"), load_file(f"{want}/model.safetensors"))
    plain = run_merge(recipe_from_dict({"merge_method": "task_arithmetic", "base_model": str(models["base"]),
                                        "models": [{"model": stage, "parameters": {"weight": 0.5}}]}),
                      tmp_path / "no_lora", QUIET).output
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    without, with_lora = (load_file(f"{folder}/model.safetensors")[q_proj] for folder in (plain, want))
    assert not torch.equal(without, with_lora)  # the adapter did change the stage's tensors

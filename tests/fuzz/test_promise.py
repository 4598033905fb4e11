"""One hostile input per cause of issue 18, each checked against the whole promise (fuzz_cases.py):
exit 2, one line naming the file, no traceback, nothing written, no input changed."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fuzz_cases import (
    _DELETE,
    Case,
    copy_models,
    make_models,
    merge_argv,
    read_raw_safetensors,
    rewrite_config,
    run_case,
    split_into_shards,
    weights_file,
    write_raw_safetensors,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    return make_models(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def models(pristine, tmp_path) -> dict[str, Path]:
    return copy_models(pristine, tmp_path / "in")


def refused(case: Case) -> None:
    outcome = run_case(case)
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


def merge_case(models, tmp_path, *extra, mention=None, method="task_arithmetic") -> Case:
    out = tmp_path / "out"
    return Case(merge_argv(models, out, *extra, method=method), [tmp_path / "in"], out, mention=mention)


# --- 1. inputs are never deleted ------------------------------------------------------------------

@pytest.mark.parametrize("target", ["input", "symlink", "parent", "inside"])
def test_output_overlapping_an_input_is_refused_even_with_force(models, tmp_path, target):
    link = tmp_path / "link"
    link.symlink_to(models["ft1"])
    out = {"input": models["ft1"], "symlink": link, "parent": tmp_path / "in",
           "inside": models["ft1"] / "merged"}[target]
    extra = ["--force"] if target != "inside" else []
    refused(Case(merge_argv(models, out, *extra), [tmp_path / "in", link], out))


def test_blend_and_graft_with_force_never_delete_their_inputs(models, tmp_path):
    before, after = models["base"], models["ft1"]
    refused(Case(["blend", "--before", str(before), "--after", str(after), "--output", str(after), "--force",
                  "--alphas", "0.5", "--quiet"], [tmp_path / "in"], after))
    refused(Case(["graft", str(before), str(after), str(after), "--force", "--quiet"], [tmp_path / "in"], after))


def test_a_finished_output_is_not_replaced_without_force(models, tmp_path):
    out = tmp_path / "out"
    first = run_case(Case(merge_argv(models, out), [tmp_path / "in"], out, expect="succeed"))
    assert first.problems == []
    refused(Case(merge_argv(models, out), [tmp_path / "in", out], out))


def test_a_dead_runs_temp_folder_is_cleaned_and_a_live_ones_kept(models, tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out.vadasm-tmp-{2**22 + 12345}"  # above the default pid_max: no such process
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half written")
    outcome = run_case(Case(merge_argv(models, out), [tmp_path / "in"], out, expect="succeed"))
    assert outcome.problems == [] and not dead.exists()


# --- 2. nothing outside the model folder is read ---------------------------------------------------

@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_weights_outside_the_model_folder_are_refused(models, tmp_path, where):
    secret = tmp_path / "secret.safetensors"
    shards = split_into_shards(models["ft2"])
    shutil.move(shards[1], secret)
    index_path = models["ft2"] / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    if where == "symlink":
        shards[1].symlink_to(secret)
    else:
        target = "../../secret.safetensors" if where == "dotdot" else str(secret)
        index["weight_map"] = {n: (target if f == shards[1].name else f) for n, f in index["weight_map"].items()}
        index_path.write_text(json.dumps(index))
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


def test_model_type_is_a_name_not_a_path(models, tmp_path):
    rewrite_config(models["ft2"], model_type="../../../../etc/passwd")
    refused(merge_case(models, tmp_path, mention="config.json"))


# --- 3. safetensors headers ------------------------------------------------------------------------

def corrupt_header(model: Path, change) -> None:
    header, data = read_raw_safetensors(weights_file(model))
    result = change(header)
    write_raw_safetensors(weights_file(model), header if result is None else result, data)


def first_tensor(header: dict) -> dict:
    return header[sorted(k for k in header if k != "__metadata__")[0]]


def second_tensor(header: dict) -> dict:
    return header[sorted(k for k in header if k != "__metadata__")[1]]


HEADER_CORRUPTIONS = {
    "json_list": lambda h: [h],
    "negative_offset": lambda h: first_tensor(h).update(data_offsets=[-8, first_tensor(h)["data_offsets"][1]]),
    "string_offset": lambda h: first_tensor(h).update(data_offsets=["0", "16"]),
    "string_shape": lambda h: first_tensor(h).update(shape=["4", 8]),
    "negative_shape": lambda h: first_tensor(h).update(shape=[-1]),
    "missing_offsets": lambda h: first_tensor(h).pop("data_offsets"),
    "unknown_dtype": lambda h: first_tensor(h).update(dtype="Q7"),
    "reversed_offsets": lambda h: first_tensor(h).update(data_offsets=first_tensor(h)["data_offsets"][::-1]),
    "overlapping": lambda h: second_tensor(h).update(data_offsets=first_tensor(h)["data_offsets"]),
    "size_mismatch": lambda h: first_tensor(h).update(shape=[first_tensor(h)["shape"][0] + 1,
                                                            *first_tensor(h)["shape"][1:]]),
    "past_the_end": lambda h: first_tensor(h).update(data_offsets=[10**9, 10**9 + 4]),
    "empty": lambda h: {},
    "metadata_not_strings": lambda h: h.update(__metadata__={"format": ["pt"]}),
}


@pytest.mark.parametrize("kind", sorted(HEADER_CORRUPTIONS))
def test_malformed_safetensors_headers_are_refused(models, tmp_path, kind):
    corrupt_header(models["ft2"], HEADER_CORRUPTIONS[kind])
    refused(merge_case(models, tmp_path, mention=str(weights_file(models["ft2"]))))


def test_an_empty_base_is_refused(models, tmp_path):
    corrupt_header(models["base"], HEADER_CORRUPTIONS["empty"])
    refused(merge_case(models, tmp_path, mention=str(models["base"])))


def test_a_deeply_nested_header_is_refused_quickly(models, tmp_path):
    data = read_raw_safetensors(weights_file(models["ft2"]))[1]
    write_raw_safetensors(weights_file(models["ft2"]), b"[" * 200_000 + b"]" * 200_000, data)
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


def test_a_repeated_tensor_name_is_refused(models, tmp_path):
    header, data = read_raw_safetensors(weights_file(models["ft2"]))
    name = sorted(k for k in header if k != "__metadata__")[0]
    raw = json.dumps(header)
    duplicate = json.dumps({name: header[name]})[1:-1]
    write_raw_safetensors(weights_file(models["ft2"]), (raw[:-1] + ", " + duplicate + "}").encode(), data)
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


def test_a_truncated_file_is_refused(models, tmp_path):
    path = weights_file(models["ft2"])
    path.write_bytes(path.read_bytes()[:-100])
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


def test_a_stray_second_weights_file_without_index_is_refused(models, tmp_path):
    shutil.copy(weights_file(models["ft2"]), models["ft2"] / "extra.safetensors")
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


def test_a_tensor_in_two_shards_is_refused(models, tmp_path):
    shards = split_into_shards(models["ft2"])
    first, second = load_file(shards[0]), load_file(shards[1])
    name = sorted(first)[0]
    second[name] = first[name] + 1
    save_file(second, shards[1], metadata={"format": "pt"})
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


@pytest.mark.parametrize("command", ["merge", "blend"])
def test_an_index_that_leaves_a_shard_out_is_refused(models, tmp_path, command):
    shards = split_into_shards(models["ft1"])
    index_path = models["ft1"] / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {n: f for n, f in index["weight_map"].items() if f != shards[1].name}
    index_path.write_text(json.dumps(index))
    out = tmp_path / "out"
    argv = (merge_argv(models, out) if command == "merge" else
            ["blend", "--before", str(models["base"]), "--after", str(models["ft1"]), "--output", str(out),
             "--alphas", "0.5", "--quiet"])
    refused(Case(argv, [tmp_path / "in"], out, mention=str(models["ft1"])))


def test_a_valid_zero_size_tensor_is_merged(models, tmp_path):
    for name in ("base", "ft1", "ft2"):
        path = weights_file(models[name])
        tensors = load_file(path)
        tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(0)
        save_file(tensors, path, metadata={"format": "pt"})
    out = tmp_path / "out"

    def zero_size_kept(folder: Path) -> str | None:
        merged = load_file(folder / "model.safetensors")
        return None if merged["model.layers.0.self_attn.q_proj.bias"].shape == (0,) else "zero-size tensor lost"

    outcome = run_case(Case(merge_argv(models, out), [tmp_path / "in"], out, expect="succeed", check=zero_size_kept))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


# --- 4. config.json is checked against the tensors --------------------------------------------------

CONFIG_LIES = {
    "more_layers": {"num_hidden_layers": 8},
    "wrong_hidden": {"hidden_size": 48},
    "wrong_vocab": {"vocab_size": 4096},
    "layers_word": {"num_hidden_layers": "four"},
    "layers_list": {"num_hidden_layers": [2]},
    "layers_bool": {"num_hidden_layers": True},
    "no_model_type": {"model_type": _DELETE},
}


@pytest.mark.parametrize("lie", sorted(CONFIG_LIES))
def test_a_config_that_contradicts_the_tensors_is_refused(models, tmp_path, lie):
    rewrite_config(models["ft2"], **CONFIG_LIES[lie])
    refused(merge_case(models, tmp_path, mention=str(models["ft2"])))


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00bad"])
def test_a_corrupt_tokenizer_is_refused(models, tmp_path, content):
    (models["base"] / "tokenizer.json").write_bytes(content)
    refused(merge_case(models, tmp_path, mention="tokenizer.json"))


# --- 5. recipes and flags ---------------------------------------------------------------------------

def recipe_case(models, tmp_path, text: str | bytes, mention: str | None = None) -> Case:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    return Case(["merge", str(recipe), str(out), "--quiet"], [tmp_path / "in", recipe], out,
                mention=mention if mention is not None else str(recipe))


def task_recipe(models, weight1="0.5", weight2="0.5", method="task_arithmetic", extra_params="",
                model_params="") -> str:
    return (f"merge_method: {method}\nbase_model: {models['base']}\nmodels:\n"
            f"  - model: {models['ft1']}\n    parameters: {{weight: {weight1}{model_params}}}\n"
            f"  - model: {models['ft2']}\n    parameters: {{weight: {weight2}{model_params}}}\n"
            f"parameters: {{{extra_params}}}\n")


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    + ["merge_method: *i"]
)

BAD_RECIPES = {
    "alias_bomb": lambda m: BILLION_LAUGHS,
    "weight_string": lambda m: task_recipe(m, weight1='"abc"'),
    "weight_null": lambda m: task_recipe(m, weight1="null"),
    "weight_overflow": lambda m: task_recipe(m, weight1="1e400"),
    "weight_nan": lambda m: task_recipe(m, weight1=".nan"),
    "weight_inf": lambda m: task_recipe(m, weight2="-.inf"),
    "lambda_nan": lambda m: task_recipe(m, extra_params="lambda: .nan"),
    "density_negative": lambda m: task_recipe(m, method="ties", model_params=", density: -0.1"),
    "density_above_one": lambda m: task_recipe(m, method="ties", model_params=", density: 1.5"),
    "density_inf": lambda m: task_recipe(m, method="ties", model_params=", density: .inf"),
    "dare_density_zero": lambda m: task_recipe(m, method="dare_ties", model_params=", density: 0"),
    "normalize_word": lambda m: task_recipe(m, method="ties", extra_params="normalize: maybe"),
    "duplicate_key": lambda m: task_recipe(m) + "merge_method: linear\n",
    "same_model_twice": lambda m: task_recipe(m).replace(str(m["ft2"]), str(m["ft1"])),
    "all_zero_linear": lambda m: task_recipe(m, "0", "0", method="linear"),
    "slerp_t_five": lambda m: (f"merge_method: slerp\nbase_model: {m['base']}\nmodels:\n  - model: {m['base']}\n"
                               f"  - model: {m['ft1']}\nparameters: {{t: 5}}\n"),
    "not_a_mapping": lambda m: "- merge_method: linear\n",
    "gradient_with_nan": lambda m: task_recipe(m, weight1="[0.5, .nan]"),
    "filter_value_string": lambda m: task_recipe(m, extra_params='lambda: [{filter: mlp, value: "x"}]'),
}


@pytest.mark.parametrize("kind", sorted(BAD_RECIPES))
def test_bad_recipes_are_refused(models, tmp_path, kind):
    refused(recipe_case(models, tmp_path, BAD_RECIPES[kind](models)))


def test_a_non_utf8_recipe_is_refused(models, tmp_path):
    refused(recipe_case(models, tmp_path, task_recipe(models).encode() + b"# \xff\xfe\n"))


def test_an_oversized_recipe_is_refused_quickly(models, tmp_path):
    padding = "".join(f"# {'x' * 70}\n" for _ in range(40_000))  # ~3 MB of comments
    refused(recipe_case(models, tmp_path, task_recipe(models) + padding))


def test_normalize_false_written_as_a_string_means_false(models, tmp_path):
    case = recipe_case(models, tmp_path, task_recipe(models, "1", "1", method="linear",
                                                    extra_params='normalize: "false"'))
    case.expect = "succeed"
    name = "model.layers.1.mlp.up_proj.weight"

    def summed(folder: Path) -> str | None:
        got = load_file(folder / "model.safetensors")[name]
        want = load_file(weights_file(models["ft1"]))[name] + load_file(weights_file(models["ft2"]))[name]
        return None if torch.allclose(got, want, atol=1e-6) else "normalize 'false' was read as true"

    case.check = summed
    outcome = run_case(case)
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


BAD_FLAGS = {
    "shard_size_negative": ["--shard-size", "-5MB"],
    "shard_size_zero": ["--shard-size", "0"],
    "shard_size_word": ["--shard-size", "big"],
    "threads_zero": ["--threads", "0"],
    "device_bogus": ["--device", "bogus"],
    "device_cuda_without_cuda": ["--device", "cuda"],
    "density_flag_above_one": ["--density", "2"],
    "param_nan": ["--param", "lambda=nan"],
}


@pytest.mark.parametrize("kind", sorted(BAD_FLAGS))
def test_bad_flags_are_refused(models, tmp_path, kind):
    if kind == "device_cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    method = "ties" if "density" in kind else "task_arithmetic"
    refused(merge_case(models, tmp_path, *BAD_FLAGS[kind], method=method))


# --- 6. faults ---------------------------------------------------------------------------------------

def test_a_file_size_limit_is_one_line_and_leaves_nothing(models, tmp_path):
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # smaller than one tiny weights file

    run = subprocess.run([sys.executable, "-m", "vadasm", *merge_argv(models, out)], capture_output=True, text=True,
                         preexec_fn=limit, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-2000:]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_an_input_rewritten_during_the_merge_is_refused(models, tmp_path, monkeypatch):
    from vadasm.io import writer

    calls = []

    def tampering(original):
        def write_then_tamper(self, name, tensor):
            if not calls:  # another program rewrites ft2 in place once the merge has started
                path = weights_file(models["ft2"])
                save_file({k: v + 1 for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
            calls.append(name)
            return original(self, name, tensor)
        return write_then_tamper

    for method in ("write", "write_rows"):
        monkeypatch.setattr(writer.ShardedWriter, method, tampering(getattr(writer.ShardedWriter, method)))
    case = merge_case(models, tmp_path, mention=str(models["ft2"]))
    case.inputs = [models["base"], models["ft1"]]  # ft2 is changed on purpose, by the "other program"
    refused(case)

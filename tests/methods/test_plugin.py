"""Adding a merge method is one new file plus its registration (methods/registry.py): shown here with a
toy method written to a temporary file, registered for these tests only, that then appears in
`vadasm methods`, `vadasm merge --help`, recipe validation, merging and tuning without touching any
other module. Help texts are built when the CLI is imported, so the --help checks run a fresh process
that imports the plug-in first, as `vadasm.methods` imports its method files.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fuzz_cases import run_cli
from pico_models import make_text_model, perturbed_copy
from vadasm.errors import VadasmError
from vadasm.graft.language import delta_params
from vadasm.graft.options import GraftOptions, check_options, text_methods
from vadasm.merge import MergeOptions, recipe_from_dict, run_merge
from vadasm.methods import METHODS, get_method, method_names
from vadasm.tune import GraftBuilder, MergeBuilder, space_from_specs
from vadasm.tune.preflight import check_choices

NAME = "toy_clipped_sum"
PLUGIN = textwrap.dedent(f'''
    """Clipped task arithmetic: base + clamp(sum_i w_i (t_i - base), -clip, clip)."""

    from vadasm.methods.registry import WEIGHT, MergeMethod, Param, register


    def clipped_sum(base, tensors, *, weight, clip, generator=None):
        delta = sum(w * (t - base) for w, t in zip(weight, tensors))
        return base + delta.clamp(-clip, clip)


    register(MergeMethod("{NAME}", clipped_sum, needs_base=True, base_is_input=False,
                         params=(WEIGHT, Param("clip", 1.0, low=0.0, low_open=True, help="largest change per entry")),
                         rows_independent=True, summary="task arithmetic with each entry's change clipped"))
''')
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugin")
    (folder / f"{NAME}.py").write_text(PLUGIN, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def toy(plugin_dir):
    """The plug-in imported (so registered) in this process; unregistered afterwards."""
    sys.path.insert(0, str(plugin_dir))
    try:
        yield importlib.import_module(NAME)
    finally:
        METHODS.pop(NAME, None)
        sys.modules.pop(NAME, None)
        sys.path.remove(str(plugin_dir))


@pytest.fixture(scope="module")
def fresh_cli(plugin_dir) -> dict[str, str]:
    """stdout of some commands in a new process that imports the plug-in before the CLI."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path[:0] = [{str(plugin_dir)!r}, {str(TESTS)!r}]
        import {NAME}
        from fuzz_cases import run_cli
        runs = {{" ".join(a): run_cli(a) for a in (["methods"], ["merge", "--help"], ["graft", "--help"])}}
        print(json.dumps({{k: [r.code, r.stdout] for k, r in runs.items()}}))
    """)
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          check=True)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(code == 0 for code, _ in runs.values()), runs
    return {k: " ".join(out.split()) for k, (_, out) in runs.items()}  # help text unwrapped


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    root = tmp_path_factory.mktemp("trio")
    base = make_text_model(root / "base", "llama")
    return base, perturbed_copy(base, root / "ft1", seed=1), perturbed_copy(base, root / "ft2", seed=2)


def _recipe(trio, method: str, clip=None) -> dict:
    base, ft1, ft2 = trio
    return {"merge_method": method, "base_model": str(base), "parameters": {} if clip is None else {"clip": clip},
            "models": [{"model": str(ft1), "parameters": {"weight": 0.5}},
                       {"model": str(ft2), "parameters": {"weight": 2.0}}]}


def _check_clipped_sum(trio, out: Path, clip: float) -> None:
    base, ft1, ft2 = (load_file(folder / "model.safetensors") for folder in trio)
    merged = load_file(out / "model.safetensors")
    assert set(merged) == set(base)
    clipped = 0
    for name, b in base.items():
        delta = 0.5 * (ft1[name] - b) + 2.0 * (ft2[name] - b)
        clipped += int((delta.abs() > clip).sum())
        assert torch.allclose(merged[name], b + delta.clamp(-clip, clip), atol=1e-6), name
    assert clipped > 0  # the clip really acted on this case


def test_registered_method_is_listed_with_its_parameters(toy):
    assert NAME in method_names(needs_data=False) and get_method(NAME).func is toy.clipped_sum
    listed = json.loads(run_cli(["methods", NAME, "--json"]).stdout)[NAME]
    assert listed["summary"] == "task arithmetic with each entry's change clipped" and listed["needs_base"]
    assert listed["parameters"]["clip"]["low"] == 0.0 and listed["parameters"]["weight"]["per_model"]


def test_fresh_cli_lists_it_in_methods_and_merge_help(fresh_cli):
    assert f"{NAME}: task arithmetic with each entry's change clipped [needs base model]" in fresh_cli["methods"]
    assert NAME in fresh_cli["merge --help"]


def test_a_recipe_with_it_is_validated_and_merges(toy, trio, tmp_path):
    with pytest.raises(VadasmError, match="'clip' must be > 0.0"):
        recipe_from_dict(_recipe(trio, NAME, -1.0))
    result = run_merge(recipe_from_dict(_recipe(trio, NAME, 0.01)), tmp_path / "out", MergeOptions(progress=False))
    assert result.merge_method == NAME and result.merged == result.tensors
    _check_clipped_sum(trio, tmp_path / "out", 0.01)


def test_tune_searches_it_in_a_merge_recipe(toy, trio, tmp_path):
    check_choices(MergeBuilder(_recipe(trio, "${method}"), str(trio[0])),
                  space_from_specs([f"method=task_arithmetic,{NAME}"]))  # accepted before any trial
    check_choices(GraftBuilder("donor", "recipient", {"base": "base"}),
                  space_from_specs([f"merge_method=ties,{NAME}"]))  # and in a graft search
    template = _recipe(trio, "${method}", "${clip}")
    builder = MergeBuilder(template, str(trio[0]))
    builder.check(["method", "clip"])
    builder.build({"method": NAME, "clip": 0.02}, tmp_path / "candidate")
    _check_clipped_sum(trio, tmp_path / "candidate", 0.02)


def test_graft_offers_it_as_a_language_merge_method(fresh_cli, toy):
    assert NAME in fresh_cli["graft --help"] and NAME in text_methods()
    check_options(GraftOptions.flat(merge_method=NAME))  # accepted
    # graft calls it with the recipient and donor: weights 1 and beta, its own parameter at its default
    assert delta_params(get_method(NAME), 0.5, 0.3) == {"weight": [1.0, 0.5], "clip": 1.0}
    assert "model_stock" not in text_methods() and "slerp" not in text_methods()  # no weight read / t required

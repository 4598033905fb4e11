"""--device, --threads and --shard-size: refused in one line (exit 2) by every command that has them.

Run in this process through the real entry point (`fuzz_cases.run_cli`), with the whole promise
checked (`fuzz_cases.run_case`): exit 2, one `error:` line, no traceback, nothing written.
The models named do not exist: a bad flag must be refused before any model is opened.
"""

from __future__ import annotations

import pytest
import torch

from fuzz_cases import Case, run_case
from vadasm.cli.common import check_run_flags, resolve_device, torch_build
from vadasm.errors import VadasmError


def command_line(command: str, tmp_path) -> list[str]:
    """A command line that would run `command` if the models existed, writing into tmp_path/out."""
    out = str(tmp_path / "out")
    return {
        "merge": ["merge", out, "--method", "linear", "--model", "a", "--model", "b"],
        "blend": ["blend", "--before", "a", "--after", "b", "--output", out],
        "decompose": ["decompose", "a", "--output", out],
        "rotations": ["rotations", "--base", "a", "--models", "b", "--output", out],
        "graft": ["graft", "donor", "recipient", out],
        "eval": ["eval", "--model", "a", "--json-out", out],
        "tune": ["tune", "--recipe", str(tmp_path / "recipe.yaml"), "--param", "w=0:1@1", "--output", out],
    }[command]


FLAGS = {
    "threads_zero": (["--threads", "0"], "--threads 0: give a whole number from 1"),
    "threads_negative": (["--threads", "-3"], "--threads -3: give a whole number from 1"),
    "device_bogus": (["--device", "bogus"], "--device bogus: unknown device"),
    "device_index_on_cpu": (["--device", "cpu:1"], "--device cpu:1: unknown device"),
    "device_cuda": (["--device", "cuda"], "--device cuda: cuda is not available on this machine (torch "),
    "device_cuda_index": (["--device", "cuda:1"], "--device cuda:1: cuda is not available on this machine"),
    "shard_size_negative": (["--shard-size", "-5MB"], "--shard-size: cannot read size '-5MB'"),
    "shard_size_zero": (["--shard-size", "0"], "--shard-size: size '0' is less than one byte"),
    "shard_size_garbage": (["--shard-size", "lots"], "--shard-size: cannot read size 'lots'"),
    "shard_size_nan": (["--shard-size", "nanGB"], "--shard-size: cannot read size 'nanGB'"),
}
# Which commands take which flag (grep cli/ for threads, device, shard_size).
TAKES = {
    "merge": ("threads", "device", "shard_size"),
    "blend": ("device", "shard_size"),
    "decompose": ("device",),
    "rotations": ("device",),
    "graft": ("shard_size",),
    "eval": ("device",),
    "tune": ("threads", "device"),
}
CASES = [(command, kind) for command, flags in TAKES.items() for kind in FLAGS if kind.startswith(flags)]


@pytest.mark.parametrize("command, kind", CASES)
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, command, kind):
    if kind.startswith("device_cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    flag, message = FLAGS[kind]
    (tmp_path / "recipe.yaml").write_text("merge_method: linear\nmodels: [{model: a}, {model: b}]\n")
    outcome = run_case(Case(command_line(command, tmp_path) + flag, [tmp_path / "recipe.yaml"], tmp_path / "out",
                            mention=message))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


def test_testbed_build_refuses_zero_threads(tmp_path):
    outcome = run_case(Case(["testbed", "build", "--threads", "0"], [], tmp_path / "out", mention="--threads 0"))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)


# --- the shared helper, including the machine kinds this one is not --------------------------------

def test_flags_not_given_are_not_checked():
    assert check_run_flags() is None
    assert check_run_flags(device="cpu", threads=2, shard_size="500MB") == "cpu"


def test_auto_is_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == "cuda"


def test_a_gpu_index_beyond_the_visible_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(VadasmError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), numbered from 0"):
        resolve_device("cuda:2")


def test_a_device_for_a_remote_cluster_is_checked_by_name_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_run_flags(device="cuda", device_here=False) == "cuda"
    with pytest.raises(VadasmError, match="unknown device"):
        check_run_flags(device="tpu", device_here=False)


def test_the_torch_build_is_named(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert torch_build() == "torch 2.13, CPU build"
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert torch_build() == "torch 2.13, CUDA 12.4 build"


def test_a_huge_device_name_is_not_echoed_whole():
    with pytest.raises(VadasmError) as caught:
        resolve_device("x" * 10_000)
    assert len(str(caught.value)) < 120


@pytest.mark.parametrize("value, message", [
    ("x=[1", "--set '[1': not valid YAML at line 1, column 3"),
    ("x=&a [*a]", "--set '&a [*a]': line 1: an alias refers to the value that contains it"),
])
def test_a_malformed_tune_set_value_is_one_line(tmp_path, value, message):
    argv = ["tune", "--donor", "d", "--recipient", "r", "--param", "beta=0:1@1", "--set", value,
            "--output", str(tmp_path / "out")]
    outcome = run_case(Case(argv, [], tmp_path / "out", mention=message))
    assert outcome.problems == [], (outcome.problems, outcome.stderr, outcome.traceback)

"""One registry and one task shape for built-in tasks and public benchmarks (issue 16)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vadasm.cli import _register_subcommands, app
from vadasm.errors import VadasmError
from vadasm.eval import registry
from vadasm.eval.benchmarks.runner import load_items
from vadasm.eval.benchmarks.tasks import BENCHMARKS
from vadasm.eval.harness import TASK_NAMES
from vadasm.eval.task_protocol import PROMPT_FORMATS, EvalTask, format_question
from vadasm.eval.tasks import BUILTIN_TASKS, GENERATIVE_TASKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
SUFFIX = "Answer the question using a single word or phrase."


def test_every_task_declares_the_protocol_fields_and_its_own_name():
    declared = set(EvalTask.__annotations__)
    for name, task in registry.TASKS.items():
        assert task.name == name
        assert declared <= {f.name for f in dataclasses.fields(task)}, name
        assert task.kind in ("generate", "choice", "perplexity")
        assert task.prompt_format in (task.prompt_formats or ("",))
    assert list(registry.TASKS) == [*BUILTIN_TASKS, *BENCHMARKS]
    assert TASK_NAMES == ("easyvqa", "arith", "perplexity")
    assert list(GENERATIVE_TASKS) == ["easyvqa", "arith"]


def test_split_keeps_order_and_names_every_task_when_one_is_unknown():
    assert registry.split_tasks(["gsm8k", "easyvqa", "mmlu", "perplexity"]) == (
        ["easyvqa", "perplexity"], ["gsm8k", "mmlu"])
    with pytest.raises(VadasmError, match="unknown task.*nope; available: easyvqa, arith, perplexity, vqav2"):
        registry.split_tasks(["arith", "nope"])


def test_prompt_formats_apply_only_where_a_task_offers_them():
    assert registry.prompt_formats_for(["easyvqa", "arith", "vqav2"], None) == {
        "easyvqa": "bare", "vqav2": "short-answer"}
    assert registry.prompt_formats_for(["easyvqa", "okvqa", "gsm8k"], "short-answer") == {
        "easyvqa": "short-answer", "okvqa": "short-answer"}
    registry.check_prompt_format(["arith", "easyvqa"], "short-answer")
    with pytest.raises(VadasmError, match="--prompt-format applies to easyvqa, vqav2, okvqa"):
        registry.check_prompt_format(["arith", "gsm8k"], "bare")
    with pytest.raises(VadasmError, match="--prompt-format 'terse': choose one of bare, short-answer"):
        registry.check_prompt_format(["easyvqa"], "terse")


def test_format_question_words_the_question():
    assert format_question("bare", "what shape is it?") == "what shape is it?"
    assert format_question("short-answer", "what shape is it?") == f"what shape is it?\n{SUFFIX}"
    assert set(PROMPT_FORMATS) == {"bare", "short-answer"}


def test_vqa_benchmark_can_drop_its_short_answer_suffix(tmp_path):
    default = load_items("vqav2", str(FIXTURES / "vqav2.jsonl"), "test", None, 0, tmp_path)
    bare_task = registry.task_for("vqav2", {"vqav2": "bare"})
    bare = load_items("vqav2", str(FIXTURES / "vqav2.jsonl"), "test", None, 0, tmp_path, bare_task)
    assert [i.id for i in bare] == [i.id for i in default]
    for with_suffix, without in zip(default, bare):
        assert with_suffix.text == f"{without.text}\n{SUFFIX}" and SUFFIX not in without.text
    assert registry.task_for("vqav2") is BENCHMARKS["vqav2"]  # the default is the registered task itself


def test_eval_help_lists_every_registered_task_and_the_prompt_formats():
    _register_subcommands()
    done = CliRunner().invoke(app, ["eval", "--help"], terminal_width=400)
    assert done.exit_code == 0
    text = " ".join(done.output.split())
    for name in registry.TASKS:
        assert name in text
    assert "--prompt-format" in text and "short-answer" in text and "bare" in text


def _imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_backends_do_not_import_each_other():
    eval_dir = Path(registry.__file__).parent
    assert "vadasm.eval.backends" not in _imports(eval_dir / "benchmarks" / "vllm_backend.py")
    assert "vadasm.eval.backend_types" in _imports(eval_dir / "benchmarks" / "vllm_backend.py")
    assert "vadasm.testbed.paths" not in _imports(eval_dir / "benchmarks" / "runner.py")

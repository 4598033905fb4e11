"""Each benchmark's loader and scorer on small fixture files in the public datasets' layouts."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from vadasm.errors import VadasmError
from vadasm.eval.benchmarks.data import is_hub_id, load_rows
from vadasm.eval.benchmarks.math_answers import equivalence_backend, last_boxed, math_equal
from vadasm.eval.benchmarks.runner import load_items
from vadasm.eval.benchmarks.tasks import BENCHMARKS, cut_reply

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "benchmarks"


def items(task: str, file: str, tmp_path: Path, limit: int | None = None):
    return load_items(task, str(FIXTURES / file), "test", limit, 0, tmp_path / "images")


def test_vqav2_reads_ten_answer_objects_and_scores_vqa_accuracy(tmp_path):
    got = items("vqav2", "vqav2.jsonl", tmp_path)
    assert [i.id for i in got] == ["1001", "1002", "1003"]
    assert len(got[1].references) == 10 and got[1].image.name == "blue_square.png"
    assert got[2].group == "yes/no"
    task = BENCHMARKS["vqav2"]
    assert task.score("Blue.\nmore text", got[1]) == 1.0  # 7 annotators said blue
    # 2 of 10 said navy: leave-one-out mean of min(matches/3, 1) = (2 * 1/3 + 8 * 2/3) / 10
    assert task.score("navy", got[1]) == pytest.approx(0.6)
    assert task.score("green", got[1]) == 0.0


def test_okvqa_reads_string_answers(tmp_path):
    got = items("okvqa", "okvqa.jsonl", tmp_path)
    assert got[0].references[2] == "strawberry"
    assert BENCHMARKS["okvqa"].score("an apple", got[0]) == 1.0  # 4 x "apple" after dropping the article
    assert BENCHMARKS["okvqa"].score("cherry", got[0]) == pytest.approx(0.6)


def test_mmlu_parquet_builds_the_lettered_prompt(tmp_path):
    pytest.importorskip("pyarrow")
    got = items("mmlu", "mmlu.parquet", tmp_path)
    assert got[0].answer == 1 and got[0].group == "elementary_mathematics"
    assert "about elementary mathematics." in got[0].context
    assert got[0].context.endswith("What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    assert got[0].continuations == (" A", " B", " C", " D")
    assert BENCHMARKS["mmlu"].score_choice([-3.0, -1.0, -2.0, -5.0], got[0]) == 1.0
    assert BENCHMARKS["mmlu"].score_choice([-0.5, -1.0, -2.0, -5.0], got[0]) == 0.0


def test_gsm8k_reference_is_the_number_after_hashes_and_reply_uses_last_number(tmp_path):
    got = items("gsm8k", "gsm8k.jsonl", tmp_path)
    assert [i.references[0] for i in got] == ["7", "1230"]
    task = BENCHMARKS["gsm8k"]
    assert task.score("3 + 4 = 7, so he has 7 apples.\nQuestion: Ann has 99 pears", got[0]) == 1.0
    assert task.score("He has 3 + 4 = 8", got[0]) == 0.0
    assert task.score("They cost $1,230 together.", got[1]) == 1.0
    assert cut_reply("x = 5\nProblem: next") == "x = 5"


@pytest.mark.parametrize(("task", "file", "reference", "group"), [
    ("math500", "math500.jsonl", "\\frac{3}{4}", "1"),
    ("aime24", "aime24.jsonl", "24", "2024"),
    ("aime25", "aime25.jsonl", "35", "all"),
    ("amc23", "amc23.jsonl", "27", "all"),  # stored as the float 27.0
])
def test_math_loaders_read_each_public_layout(tmp_path, task, file, reference, group):
    got = items(task, file, tmp_path)
    assert got[0].references == (reference,) and got[0].group == group
    assert "\\boxed{}" in got[0].text
    assert BENCHMARKS[task].score(f"so the answer is $\\boxed{{{reference}}}$.", got[0]) == 1.0
    assert BENCHMARKS[task].score(f"the answer is {reference}", got[0]) == 0.0  # no boxed answer


def test_boxed_extraction_and_equivalence():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b^{2}}} end") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\boxed{unclosed") is None
    assert math_equal("\\dfrac{3}{4}", "\\frac{3}{4}")
    assert math_equal("27.0", "27")
    assert not math_equal("28", "27")
    if equivalence_backend() == "math-verify":
        assert math_equal("0.75", "\\frac{3}{4}")


@pytest.mark.parametrize(("task", "file", "row", "problem"), [
    ("gsm8k", "bad_gsm8k.jsonl", 2, "no final number"),
    ("gsm8k", "bad_json.jsonl", 2, "not valid JSON"),
    ("vqav2", "bad_vqa.jsonl", 2, "missing.png not found"),
    ("mmlu", "bad_mmlu.jsonl", 2, "answer index 7 is out of range"),
    ("math500", "bad_math.jsonl", 3, "field 'problem' should be str"),
])
def test_malformed_rows_are_named(tmp_path, task, file, row, problem):
    with pytest.raises(VadasmError) as err:
        items(task, file, tmp_path)
    message = str(err.value)
    assert f"{file}: row {row}: " in message and problem in message


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(VadasmError, match="data file not found"):
        load_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(VadasmError, match="unsupported data file type '.csv'"):
        load_rows(str(tmp_path / "x.csv"))


def test_limit_draws_the_same_items_every_time(tmp_path):
    first = [i.id for i in items("vqav2", "vqav2.jsonl", tmp_path, limit=2)]
    assert first == [i.id for i in items("vqav2", "vqav2.jsonl", tmp_path, limit=2)] and len(first) == 2


def test_hub_source_maps_our_split_names_without_network(monkeypatch):
    calls = {}

    def load_dataset(name, config, split):
        calls.update(name=name, config=config, split=split)
        return [{"question": "q", "answer": "#### 3"}]

    fake = types.SimpleNamespace(get_dataset_split_names=lambda name, config: ["train", "validation", "test"],
                                 load_dataset=load_dataset)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert is_hub_id("openai/gsm8k:main") and not is_hub_id(str(FIXTURES / "gsm8k.jsonl"))
    rows = load_rows("openai/gsm8k:main", split="val")
    assert calls == {"name": "openai/gsm8k", "config": "main", "split": "validation"}
    assert rows[0].where() == "openai/gsm8k:main[validation]: row 1"

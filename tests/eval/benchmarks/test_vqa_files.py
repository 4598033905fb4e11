"""Official VQAv2 / OK-VQA files (questions JSON, annotations JSON, COCO image folder) as --data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vadasm.errors import VadasmError
from vadasm.eval.benchmarks.data import parse_sources
from vadasm.eval.benchmarks.runner import load_items
from vadasm.eval.benchmarks.tasks import BENCHMARKS


def _answers(*words: str) -> list[dict]:
    return [{"answer": w, "answer_confidence": "yes", "answer_id": k + 1} for k, w in enumerate(words)]


def write_official(root: Path, questions=None, annotations=None, image_names=("COCO_val2014_000000000042.jpg",
                                                                              "7.png")) -> str:
    """A two-question official triple; returns the --data value."""
    questions = questions if questions is not None else {"questions": [
        {"image_id": 42, "question": "What color is the bus?", "question_id": 420},
        {"image_id": 7, "question": "How many dogs?", "question_id": 70},
    ]}
    annotations = annotations if annotations is not None else {"annotations": [
        {"question_id": 70, "image_id": 7, "answer_type": "number", "question_type": "how many",
         "multiple_choice_answer": "2", "answers": _answers(*["2"] * 7, *["3"] * 3)},
        {"question_id": 420, "image_id": 42, "answer_type": "other", "question_type": "what color",
         "multiple_choice_answer": "red", "answers": _answers(*["red"] * 10)},
    ]}
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in image_names:
        (root / "images" / name).write_bytes(b"not decoded when loading")
    (root / "q.json").write_text(json.dumps(questions))
    (root / "a.json").write_text(json.dumps(annotations))
    return f"{root / 'q.json'},{root / 'a.json'},{root / 'images'}"


@pytest.mark.parametrize("task", ["vqav2", "okvqa"])
def test_official_files_become_items_scored_with_the_official_metric(tmp_path, task):
    spec = write_official(tmp_path)
    assert parse_sources([f"{task}={spec}"]) == {task: spec}
    items = load_items(task, spec, "val", None, 0, tmp_path / "cache")
    assert [i.id for i in items] == ["420", "70"]
    assert items[0].image == tmp_path / "images" / "COCO_val2014_000000000042.jpg"
    assert items[1].image.name == "7.png" and items[1].group == "number"
    assert "What color is the bus?" in items[0].text and len(items[0].references) == 10
    bench = BENCHMARKS[task]
    assert bench.score("Red.", items[0]) == 1.0  # the reply is normalised, the unanimous answers are not
    assert bench.score("two", items[1]) == 1.0
    assert bench.score("3", items[1]) == pytest.approx(0.9)  # 3 of 10 annotators


def test_images_may_be_named_by_zero_padded_id(tmp_path):
    spec = write_official(tmp_path, image_names=("000000000042.jpg", "COCO_train2014_000000000007.jpg"))
    items = load_items("vqav2", spec, "val", None, 0, tmp_path / "cache")
    assert [i.image.name for i in items] == ["000000000042.jpg", "COCO_train2014_000000000007.jpg"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_image", "images: no image for image_id 7 (question_id 70)"),
        ("two_images", "images: two images for image_id 42"),
        ("no_annotation", "a.json: no annotation for question_id 70"),
        ("questions_not_official", "q.json: expected an official VQA questions file"),
        ("bad_json", "q.json: not valid JSON"),
        ("question_without_image_id", "q.json: question 1: missing field 'image_id'"),
        ("answer_not_string", "a.json: annotation 1: answers[0] should be an object with an 'answer' string"),
        ("two_parts", "QUESTIONS.json,ANNOTATIONS.json,IMAGES_DIR"),
        ("missing_folder", "nowhere: images folder not found"),
    ],
)
def test_bad_official_files_are_one_line_naming_the_file(tmp_path, case, message):
    spec = write_official(tmp_path)
    q, a, images = spec.split(",")
    if case == "missing_image":
        (tmp_path / "images" / "7.png").unlink()
    elif case == "two_images":
        (tmp_path / "images" / "42.jpg").write_bytes(b"x")
    elif case == "no_annotation":
        data = json.loads(Path(a).read_text())
        Path(a).write_text(json.dumps({"annotations": data["annotations"][1:]}))
    elif case == "questions_not_official":
        Path(q).write_text("[]")
    elif case == "bad_json":
        Path(q).write_text("{")
    elif case == "question_without_image_id":
        Path(q).write_text(json.dumps({"questions": [{"question": "?", "question_id": 1}]}))
    elif case == "answer_not_string":
        data = json.loads(Path(a).read_text())
        data["annotations"][0]["answers"][0] = {"answer": 2}
        Path(a).write_text(json.dumps(data))
    elif case == "two_parts":
        spec = f"{q},{a}"
    elif case == "missing_folder":
        spec = f"{q},{a},{tmp_path / 'nowhere'}"
    with pytest.raises(VadasmError) as err:
        load_items("vqav2", spec, "val", None, 0, tmp_path / "cache")
    text = str(err.value)
    assert message in text and "\n" not in text


def test_relative_official_paths_become_absolute_for_workers(tmp_path, monkeypatch):
    from vadasm.cli.eval_cmd import absolute_sources

    write_official(tmp_path)
    monkeypatch.chdir(tmp_path)
    spec = absolute_sources({"vqav2": "q.json,a.json,images"})["vqav2"]
    assert spec == f"{tmp_path / 'q.json'},{tmp_path / 'a.json'},{tmp_path / 'images'}"
    monkeypatch.chdir("/")
    assert len(load_items("vqav2", spec, "val", None, 0, tmp_path / "cache")) == 2

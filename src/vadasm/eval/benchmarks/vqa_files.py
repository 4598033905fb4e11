"""Official VQAv2 / OK-VQA files as benchmark rows: `--data vqav2=QUESTIONS.json,ANNOTATIONS.json,IMAGES/`.

The official release splits an item over three places: a questions JSON (`{"questions": [{image_id,
question, question_id}]}`), an annotations JSON (`{"annotations": [{question_id, answers: [{answer}],
multiple_choice_answer, answer_type, question_type}]}`) and a folder of COCO images named
`COCO_val2014_000000000042.jpg` (or `000000000042.jpg`, `42.jpg`). OK-VQA ships the same layout.
Each question becomes one row in the shape `VqaBenchmark.parse` reads; every problem is reported
as one line naming the file it is in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError
from vadasm.eval.benchmarks.rows import Row
from vadasm.io.json_file import read_json_file

SPEC_HELP = "official VQA files are given as QUESTIONS.json,ANNOTATIONS.json,IMAGES_DIR"
_IMAGE_NAME = re.compile(r"^(?:.*_)?(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)


def is_official_spec(source: str) -> bool:
    """A comma-separated source that is not itself a file (no Hub id or data file has a comma)."""
    return "," in source and not Path(source).expanduser().exists()


def official_vqa_rows(source: str) -> list[Row]:
    """One row per question of an official questions/annotations/images triple."""
    parts = [part.strip() for part in source.split(",")]
    if len(parts) != 3 or not all(parts):
        raise VadasmError(f"--data {source!r}: {SPEC_HELP}")
    questions_path, annotations_path, images_dir = (Path(p).expanduser().resolve() for p in parts)
    questions = _records(questions_path, "questions")
    annotations = _annotations_by_question(annotations_path)
    images = _image_index(images_dir)
    rows = []
    for number, question in enumerate(questions, 1):
        where = f"{questions_path}: question {number}"
        question_id = _field(question, "question_id", (int, str), where)
        image_id = _field(question, "image_id", int, where)
        text = _field(question, "question", str, where)
        annotation = annotations.get(str(question_id))
        if annotation is None:
            raise VadasmError(f"{annotations_path}: no annotation for question_id {question_id}")
        image = images.get(image_id)
        if image is None:
            raise VadasmError(f"{images_dir}: no image for image_id {image_id} (question_id {question_id}); "
                              f"looked for COCO_*_{image_id:012d}.jpg, {image_id:012d}.jpg, {image_id}.jpg/.png")
        data = {
            "question_id": question_id, "question": text, "image": str(image),
            "answers": annotation["answers"],
            "answer_type": annotation.get("answer_type"), "question_type": annotation.get("question_type"),
            "multiple_choice_answer": annotation.get("multiple_choice_answer"),
        }
        rows.append(Row(str(questions_path), number, data, None))
    return rows


def _records(path: Path, key: str) -> list[dict[str, Any]]:
    """The list under `key` of an official JSON file, every element an object."""
    content = read_json_file(path, f"{path}: {key} file not found" if not path.exists() else f"{path}: is not a file")
    records = content.get(key) if isinstance(content, dict) else None
    if not isinstance(records, list):
        raise VadasmError(f"{path}: expected an official VQA {key} file (an object with a '{key}' list)")
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise VadasmError(f"{path}: {key[:-1]} {number} is not a JSON object")
    return records


def _field(record: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = record.get(name)
    if value is None:
        raise VadasmError(f"{where}: missing field '{name}'")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise VadasmError(f"{where}: field '{name}' has the wrong type ({type(value).__name__})")
    return value


def _annotations_by_question(path: Path) -> dict[str, dict[str, Any]]:
    """Annotations keyed by str(question_id), their answer lists checked."""
    by_question: dict[str, dict[str, Any]] = {}
    for number, annotation in enumerate(_records(path, "annotations"), 1):
        where = f"{path}: annotation {number}"
        question_id = _field(annotation, "question_id", (int, str), where)
        answers = _field(annotation, "answers", list, where)
        if not answers:
            raise VadasmError(f"{where}: 'answers' is empty")
        for k, answer in enumerate(answers):
            if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
                raise VadasmError(f"{where}: answers[{k}] should be an object with an 'answer' string")
        if str(question_id) in by_question:
            raise VadasmError(f"{where}: question_id {question_id} is annotated twice")
        by_question[str(question_id)] = annotation
    return by_question


def _image_index(folder: Path) -> dict[int, Path]:
    """COCO image id -> file, from the names in `folder` (two files for one id is an error)."""
    if not folder.is_dir():
        raise VadasmError(f"{folder}: images folder not found" if not folder.exists() else f"{folder}: not a folder")
    index: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = _IMAGE_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        image_id = int(match.group(1))
        if image_id in index:
            raise VadasmError(f"{folder}: two images for image_id {image_id} ({index[image_id].name}, {path.name})")
        index[image_id] = path
    return index


def absolute_official_spec(source: str) -> str:
    """The three paths of an official spec made absolute (Ray workers run in another directory)."""
    return ",".join(str(Path(part.strip()).expanduser().absolute()) for part in source.split(","))

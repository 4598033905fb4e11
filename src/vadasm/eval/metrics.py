"""Metric functions: pure, no I/O, checked against hand-computed cases in the tests.

The VQA metric is the official VQAv2 evaluation's (see `vadasm.eval.vqa_official`, which follows
the VQA API's vqaEval.py exactly); `vqa_accuracy` adds only the one-reference case, where the
official leave-one-out formula is undefined in spirit (it always gives 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vadasm.eval.vqa_official import normalize_answer, official_accuracy

normalize_vqa_answer = normalize_answer


def vqa_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its annotators' answers (1.0 = fully right).

    Two or more references: the official accuracy (min(1, matches among the others / 3), averaged
    over leaving each annotator out). One reference: exact match after the official normalisation.
    """
    if len(references) == 1:
        return float(normalize_answer(prediction) == normalize_answer(references[0]))
    return official_accuracy(prediction, references)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_number(text: str) -> str | None:
    """The last number in `text` in canonical form ("1,200" -> "1200", "7.50" -> "7.5"), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    token = found[-1].replace(",", "")
    if "." in token:
        token = token.rstrip("0").rstrip(".")
    if token in ("-0", ""):
        token = "0"
    return token


def numeric_match(prediction: str, reference: str) -> bool:
    """Exact match of the last number in the prediction with the reference number."""
    got = extract_number(prediction)
    want = extract_number(reference)
    return got is not None and got == want

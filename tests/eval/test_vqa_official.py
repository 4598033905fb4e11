"""The VQA metric against the official vqaEval.py (GT-Vision-Lab/VQA, commit a013f00).

Every expected value below was produced by running the official `VQAEval` (its print statements
made Python 3, nothing else changed) on the same strings; accuracies are its `evalQA` / 100.
"""

from __future__ import annotations

import pytest

from vadasm.eval.vqa_official import (
    CONTRACTIONS,
    PUNCTUATION,
    normalize_answer,
    official_accuracy,
    process_digit_article,
    process_punctuation,
)


@pytest.mark.parametrize(
    ("raw", "after_punctuation", "normalised"),
    [
        ("dont", "dont", "don't"),
        ("Dont know", "Dont know", "don't know"),
        ("don't know", "don't know", "don't know"),
        ("10:30", "10:30", "10:30"),
        ("a&w", "a&w", "a&w"),
        ("50%", "50%", "50%"),
        ("two", "two", "2"),
        ("a dog", "a dog", "dog"),
        ("The Circle.", "The Circle", "circle"),
        ("yes!", "yes ", "yes"),
        ("t-shirt", "t shirt", "t shirt"),
        ("1,000", "1000", "1000"),
        ("red, blue", "red blue", "red blue"),
        ("3.5", "3.5", "3.5"),
        ("none of the above", "none of the above", "0 of above"),
        ("Im", "Im", "im"),
        ("somebody'd", "somebody'd", "somebodyd"),
        ("well-done .", "well done ", "well done"),
        ("e.g.", "eg", "eg"),
        ("hello ,world", "hello world", "hello world"),
        ("a,b", "a b", "b"),
        ("u.s.a.", "usa", "usa"),
        ("(left)", " left ", "left"),
        ("left / right", "left  right", "left right"),
        ("50 %", "50 %", "50 %"),
    ],
)
def test_normalisation_matches_the_official_script(raw, after_punctuation, normalised):
    assert process_punctuation(raw) == after_punctuation
    assert process_digit_article(after_punctuation) == normalised
    assert normalize_answer(raw) == normalised


def test_tables_have_the_official_sizes():
    assert len(CONTRACTIONS) == 120 and len(PUNCTUATION) == 21
    assert CONTRACTIONS["whats"] == "what's" and CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert "'" not in PUNCTUATION and ":" not in PUNCTUATION and "%" not in PUNCTUATION


def test_periods_are_stripped_at_most_32_times_as_in_the_official_call():
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("prediction", "references", "official_percent"),
    [
        ("yes", ["yes"] * 10, 100.0),
        ("Yes", ["yes"] * 10, 0.0),  # unanimous answers: nothing is normalised
        (" yes\n", ["yes"] * 10, 100.0),
        ("yes.", ["yes"] * 10, 0.0),
        ("Yes", ["yes"] * 9 + ["no"], 100.0),
        ("yes", ["yes"] * 4 + ["no"] * 6, 100.0),
        ("yes", ["yes"] * 3 + ["no"] * 7, 90.0),
        ("yes", ["yes"] * 2 + ["no"] * 8, 60.0),
        ("yes", ["yes"] + ["no"] * 9, 30.0),
        ("dont know", ["don't know"] * 5 + ["no"] * 5, 100.0),
        ("Two", ["2"] * 3 + ["3"] * 7, 90.0),
        ("a dog", ["dog"] * 6 + ["puppy"] * 4, 100.0),
        ("10:30", ["10:30"] * 4 + ["10:00"] * 6, 100.0),
        ("10 30", ["10:30"] * 4 + ["10:00"] * 6, 0.0),
        ("a&w", ["a&w"] * 5 + ["root beer"] * 5, 100.0),
        ("w", ["a&w"] * 5 + ["root beer"] * 5, 0.0),
        ("50%", ["50%"] * 3 + ["50"] * 7, 90.0),
        ("50", ["50%"] * 3 + ["50"] * 7, 100.0),
        ("t-shirt", ["t shirt"] * 4 + ["shirt"] * 6, 100.0),
        ("red", ["red"], 0.0),  # one reference: no other annotator can agree
    ],
)
def test_accuracy_matches_the_official_evaluate(prediction, references, official_percent):
    assert official_accuracy(prediction, references) == pytest.approx(official_percent / 100)


def test_accuracy_needs_a_reference():
    with pytest.raises(ValueError):
        official_accuracy("yes", [])

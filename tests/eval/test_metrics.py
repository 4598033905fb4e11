import pytest

from vadasm.eval.metrics import extract_number, normalize_vqa_answer, numeric_match, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes", "yes"),
        ("  The Circle. ", "circle"),
        ("a red  triangle!", "red triangle"),
        ("two", "2"),
        ("isnt", "isn't"),
        ("1,000", "1000"),
        ("red, blue", "red blue"),
        ("3.5", "3.5"),
    ],
)
def test_vqa_normalisation(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_single_reference_is_exact_match_after_normalisation():
    assert vqa_accuracy("Yes.", ["yes"]) == 1.0
    assert vqa_accuracy("the rectangle", ["rectangle"]) == 1.0
    assert vqa_accuracy("no", ["yes"]) == 0.0
    assert vqa_accuracy("red circle", ["red"]) == 0.0


@pytest.mark.parametrize(
    ("agreeing", "expected"),
    # 10 annotators, `agreeing` of them say "yes". Leave-one-out average of min(matches/3, 1):
    # 1 -> (1*0 + 9*1/3)/10 = 0.3; 2 -> (2*1/3 + 8*2/3)/10 = 0.6; 3 -> (3*2/3 + 7*1)/10 = 0.9.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_ten_annotator_accuracy(agreeing, expected):
    refs = ["yes"] * agreeing + ["no"] * (10 - agreeing)
    assert vqa_accuracy("yes", refs) == pytest.approx(expected)


def test_unanimous_annotators_compare_the_raw_prediction_as_the_official_code_does():
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy(normalize_vqa_answer("Yes"), ["yes"] * 10) == 1.0


def test_vqa_accuracy_needs_references():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19", "19"),
        ("12 + 7 = 19", "19"),
        ("The answer is -42.", "-42"),
        ("1,200 apples", "1200"),
        ("7.50", "7.5"),
        ("3.0", "3"),
        ("-0", "0"),
        ("no digits here", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numeric_match():
    assert numeric_match("12 + 7 = 19", "19")
    assert not numeric_match("12 + 7 = 9", "19")
    assert not numeric_match("nineteen", "19")
    assert numeric_match("-3", "-3")

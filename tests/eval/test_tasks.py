from pathlib import Path

import pytest

from vadasm.errors import VadasmError
from vadasm.eval import arith
from vadasm.eval.easyvqa import VqaItem, image_labels, question_type
from vadasm.eval.tasks import ArithTask, first_line, perplexity_texts


@pytest.mark.parametrize(
    ("question", "qtype"),
    [
        ("what color is the shape?", "what_color"),
        ("what is the color of the triangle?", "what_color"),
        ("what is the red shape?", "what_shape"),
        ("what shape does the image contain?", "what_shape"),
        ("is there a red shape in the image?", "yesno_color"),
        ("does the image not contain a teal shape?", "yesno_color_neg"),
        ("is no brown shape present?", "yesno_color_neg"),
        ("is a circle present?", "yesno_shape"),
        ("is there not a triangle?", "yesno_shape_neg"),
    ],
)
def test_question_types(question, qtype):
    assert question_type(question) == qtype


def test_image_labels_are_read_off_questions():
    a, b = Path("a.png"), Path("b.png")

    def item(q, ans, path):
        return VqaItem(q, q, (ans,), path, 0, question_type(q))

    items = (
        item("what is the red shape?", "circle", a),  # colour and shape at once
        item("is there a blue shape?", "yes", b),
        item("is there not a triangle?", "no", b),  # negated "no" asserts presence
        item("is there a green shape?", "no", b),  # says nothing positive
    )
    assert image_labels(items) == {a: ("red", "circle"), b: ("blue", "triangle")}


def test_arith_splits_are_disjoint_deterministic_and_correct():
    train = arith.problems("train", 400)
    val = arith.problems("val", 100)
    test = arith.problems("test", 100)
    expressions = [{p.expression for p in split} for split in (train, val, test)]
    assert not (expressions[0] & expressions[1]) and not (expressions[0] & expressions[2])
    assert not (expressions[1] & expressions[2])
    assert arith.problems("test", 100) == test
    assert arith.problems("test", 100, seed=1) != test
    for p in test:
        assert eval(p.expression) == p.answer  # noqa: S307 - our own generated arithmetic
        assert arith.split_of(p.expression) == "test"


def test_arith_task_scores_the_first_line():
    task = ArithTask()
    (item,) = task.items("test", 1, 0)
    answer = item.references[0]
    assert task.score(f"{answer}\nand then 12", item) == 1.0
    assert task.score(f"The result is {answer}.", item) == 1.0
    assert task.score("I do not know", item) == 0.0
    assert first_line("\n\n  yes \nno") == "yes"


def test_perplexity_text_is_held_out_by_split():
    val, test = perplexity_texts("val"), perplexity_texts("test")
    assert val and test and not set(val) & set(test)
    with pytest.raises(VadasmError):
        perplexity_texts("train")

"""The official VQA evaluation's answer normalisation and accuracy, reimplemented to match it exactly.

Source followed: `PythonEvaluationTools/vqaEvaluation/vqaEval.py` of the VQA API,
https://github.com/GT-Vision-Lab/VQA (commit a013f00, "Fixed processing answers bug", 2021), the
script behind published VQAv2 and OK-VQA numbers. Its tables (120 contractions, number words,
articles, 21 punctuation marks, the periodStrip / commaStrip patterns) are reproduced below as data;
Copyright (c) 2014, Aishwarya Agrawal, BSD 2-clause licence.

Behaviour kept on purpose, because scores would otherwise differ from the official ones:
- apostrophes, colons, `&`, `%`, `$`, `#`, `*` are not punctuation there: "don't know", "10:30",
  "a&w" and "50%" stay as they are; "-", "/", "!", "?" and friends become a space, or vanish when
  the answer has a mark next to a space or a digit-comma-digit ("1,000" -> "1000");
- a period not followed by a digit is removed, at most 32 times per answer (the official script
  passes `re.UNICODE`, which is 32, where `Pattern.sub` takes its count);
- number words go to digits and articles are dropped before contractions are restored, so the
  contraction table only ever sees lower-case words (its entries "Im", "Ive" ... never match);
- when all human answers agree, neither they nor the prediction are normalised (only stripped of
  tabs, newlines and outer spaces): "Yes" against ten "yes" scores 0 in the official code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern, odd look-behind included
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # 32: see the module docstring


def strip_whitespace(text: str) -> str:
    """Tabs and newlines to spaces, outer spaces removed: all the official code does to every answer."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official `processPunctuation`: each mark is removed or replaced by a space, then periods go."""
    out = text
    remove_all = COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if remove_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower case, number words to digits, no articles, contractions."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """An answer as the official evaluation compares it when the annotators disagree."""
    return process_digit_article(process_punctuation(strip_whitespace(answer)))


def official_accuracy(prediction: str, references: Sequence[str]) -> float:
    """Accuracy of one prediction exactly as the official `VQAEval.evaluate` computes it (0..1).

    For each human answer, min(1, matches among the other answers / 3); the mean over the answers
    (with 10 answers: the average over the 10 subsets of 9). Answers are normalised only when they
    are not all the same. With a single reference the official formula always gives 0 (no other
    annotator to match); callers decide what a one-reference item means.
    """
    if not references:
        raise ValueError("official_accuracy needs at least one reference answer")
    refs = [strip_whitespace(r) for r in references]
    pred = strip_whitespace(prediction)
    if len(set(refs)) > 1:
        refs = [process_digit_article(process_punctuation(r)) for r in refs]
        pred = process_digit_article(process_punctuation(pred))
    per_left_out = []
    for left_out in range(len(refs)):
        matches = sum(1 for j, ref in enumerate(refs) if j != left_out and ref == pred)
        per_left_out.append(min(1, float(matches) / 3))
    return float(sum(per_left_out)) / len(per_left_out)

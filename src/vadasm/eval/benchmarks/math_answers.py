"""Answer extraction and equivalence for competition math (MATH-500, AIME, AMC).

`last_boxed` takes the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces, as Minerva-style
graders do. `math_equal` uses `math-verify` (symbolic and numeric equivalence) when installed and
otherwise a normalised string comparison; `equivalence_backend` says which one a run used, and the
results record it, because the two can disagree on e.g. `\\frac{1}{2}` vs `0.5`.
"""

from __future__ import annotations

import re
from functools import lru_cache

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text` (braces balanced), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def reference_text(value: object) -> str:
    """Reference answers arrive as str, int or float (AMC 23 stores 27.0); canonical text for them."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


_STRIP = (r"\left", r"\right", r"\!", r"\,", r"\;", r"\ ", "$", r"^\circ", r"^{\circ}", r"\%", "%", "\\text{}")


def normalize_answer(answer: str) -> str:
    """A conservative string canonicalisation used only when math-verify is missing."""
    text = answer.strip()
    for token in _STRIP:
        text = text.replace(token, "")
    text = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", text)
    text = text.replace("dfrac", "frac").replace("tfrac", "frac")
    text = re.sub(r"\s+", "", text).rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    if re.fullmatch(r"-?[\d,]+", text) and "," in text and all(len(p) == 3 for p in text.split(",")[1:]):
        text = text.replace(",", "")
    return text


@lru_cache(maxsize=1)
def equivalence_backend() -> str:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return "string"
    return "math-verify"


def math_equal(prediction: str, reference: str) -> bool:
    """Whether an extracted answer equals the reference (symbolically when math-verify is present)."""
    if normalize_answer(prediction) == normalize_answer(reference):
        return True
    if equivalence_backend() != "math-verify":
        return False
    from math_verify import parse, verify

    try:
        gold = parse("$" + reference + "$")
        guess = parse("$" + prediction + "$")
        return bool(gold) and bool(guess) and bool(verify(gold, guess))
    except Exception:  # math-verify's parser raises on odd LaTeX; an unparsable answer is not a match
        return False

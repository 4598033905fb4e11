"""Pair classes (SPEC §4): what can be transferred from a donor's language model to a recipient.

A: same text architecture, same tensor shapes, same tokenizer -> the donor LM is a fine-tune of a
   base the recipient may share; its delta over `--base` can be merged by task arithmetic.
B: same tokenizer, different shapes -> only the projector moves, through an embedding map.
C: different tokenizers -> the same, with anchors found by decoded-string matching.
Pure functions over shapes and vocabularies; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PairClass:
    """The decided class and the facts it was decided from (printed and recorded)."""

    label: str  # "A", "B" or "C"
    same_tokenizer: bool
    same_text_architecture: bool
    same_shapes: bool
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> str:
        names = {"A": "shared base (same architecture, shapes, tokenizer)",
                 "B": "same tokenizer, different sizes",
                 "C": "different tokenizers"}
        return f"class {self.label}: {names[self.label]}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


def shape_differences(donor: dict[str, tuple[int, ...]], recipient: dict[str, tuple[int, ...]],
                      limit: int = 3) -> list[str]:
    """Up to `limit` human-readable differences between two text models' tensor shapes."""
    out = []
    for name in sorted(donor.keys() | recipient.keys()):
        a, b = donor.get(name), recipient.get(name)
        if a != b:
            out.append(f"{name}: donor {a or 'missing'}, recipient {b or 'missing'}")
            if len(out) >= limit:
                break
    return out


def classify_pair(donor_type: str, recipient_type: str, donor_shapes: dict[str, tuple[int, ...]],
                  recipient_shapes: dict[str, tuple[int, ...]], same_tokenizer: bool) -> PairClass:
    """Decide A/B/C from the two text models' architectures, tensor shapes and vocabularies."""
    same_arch = donor_type == recipient_type
    diffs = shape_differences(donor_shapes, recipient_shapes)
    same_shapes = same_arch and not diffs
    reasons = []
    if not same_arch:
        reasons.append(f"text architectures differ: donor {donor_type}, recipient {recipient_type}")
    elif diffs:
        reasons.append("shapes differ, e.g. " + diffs[0])
    if not same_tokenizer:
        reasons.append("vocabularies differ")
    label = "C" if not same_tokenizer else ("A" if same_shapes else "B")
    return PairClass(label, same_tokenizer, same_arch, same_shapes, reasons)

"""Which output row (one per DONOR token id) comes from where: a MODEL row, a prediction, or zeros.

Tokens are matched by their decoded strings, as the graft's anchors are (`shared_anchors`: a string
decoding from several ids is left out); special tokens decode to '' and are matched by role instead
(the donor's bos/eos/pad/unk gets MODEL's row of the same role), as mergekit matches them.
Byte-fallback tokens (`<0x21>`) decode like the character they encode ('!'): they are not matched,
so the character's own token stays unambiguous (mergekit matches raw tokens, so '!' to '!' too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vadasm.errors import VadasmError
from vadasm.graft.embedding_maps import shared_anchors

SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class TokenizerView:
    """What token surgery needs of a tokenizer: each id's string and the special tokens' ids."""

    strings: list[str]
    special_ids: dict[str, int]  # role ("bos_token", ...) -> id

    @property
    def size(self) -> int:
        return len(self.strings)


@dataclass
class TokenPlan:
    """Output rows: `copy_out[i]` takes MODEL row `copy_model[i]`; `new_out` rows are predicted from
    the donor's rows of those ids; every other row (ids with no token, past the donor's rows) is zero."""

    rows: int
    copy_out: torch.Tensor
    copy_model: torch.Tensor
    new_out: torch.Tensor

    @property
    def zero_rows(self) -> int:
        return self.rows - len(self.copy_out) - len(self.new_out)


def read_tokenizer(folder: Path) -> TokenizerView:
    """Load the tokenizer saved in `folder`; one line naming the folder if there is none."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VadasmError(f"{folder}: token surgery needs the model's tokenizer files ({first})") from None
    strings = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    for i in tokenizer.all_special_ids:
        strings[i] = ""  # control tokens carry no shared meaning: matched by role below
    for i, raw in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(strings))))):
        if raw is not None and _BYTE_FALLBACK.fullmatch(raw):
            strings[i] = ""
    specials = {role: getattr(tokenizer, f"{role}_id") for role in SPECIAL_ROLES}
    return TokenizerView(strings, {role: i for role, i in specials.items() if i is not None})


def plan_tokens(donor: TokenizerView, model: TokenizerView, donor_rows: int, model_rows: int) -> TokenPlan:
    """Match every donor token to a MODEL row, or mark it for prediction (only ids < donor_rows
    have a donor row to predict from; the others stay zero, as mergekit leaves them)."""
    rows = max(donor_rows, donor.size)
    d_ids, m_ids = shared_anchors(donor.strings, model.strings[:model_rows])
    pairs = dict(zip(d_ids.tolist(), m_ids.tolist(), strict=True))
    for role, d_id in donor.special_ids.items():
        m_id = model.special_ids.get(role)
        if m_id is not None and m_id < model_rows and d_id not in pairs:
            pairs[d_id] = m_id
    copy_out = sorted(pairs)
    new_out = [i for i in range(min(donor.size, donor_rows)) if i not in pairs]
    return TokenPlan(rows, torch.tensor(copy_out, dtype=torch.long),
                     torch.tensor([pairs[i] for i in copy_out], dtype=torch.long),
                     torch.tensor(new_out, dtype=torch.long))

"""The image token in the recipient's vocabulary, and a chat template that can place images.

Reusing a token the recipient never emits (a reserved/unused slot, or the donor's own image token
when the vocabularies share it) avoids resizing the embeddings; only when none exists is a token
added, and the caller then resizes explicitly. The template wraps the recipient's own chat
template: a prelude turns LLaVA-style content lists into the plain strings that template expects,
so the grafted model is prompted exactly as the recipient was trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RESERVED = re.compile(r"^<\|?(unused|reserved)[_a-z]*\d+\|?>$")
DEFAULT_IMAGE_TOKEN = "<image>"


@dataclass
class ImageTokenChoice:
    token: str
    token_id: int | None  # None: the token must be added to the tokenizer
    how: str


def choose_image_token(vocab: dict[str, int], donor_token: str | None, requested: str | None = None,
                       taken: set[str] | frozenset[str] = frozenset()) -> ImageTokenChoice:
    """Pick the recipient's image token: the one asked for, else the donor's if the recipient has
    it, else the lowest-id reserved/unused token, else a new `<image>` token."""
    if requested:
        if requested in vocab:
            return ImageTokenChoice(requested, vocab[requested], "requested, already in the vocabulary")
        return ImageTokenChoice(requested, None, "requested, added to the vocabulary")
    if donor_token and donor_token in vocab and donor_token not in taken:
        return ImageTokenChoice(donor_token, vocab[donor_token], "the donor's image token, present in the recipient")
    reserved = sorted((i, t) for t, i in vocab.items() if _RESERVED.match(t) and t not in taken)
    if reserved:
        token_id, token = reserved[0]
        return ImageTokenChoice(token, token_id, "reserved/unused token reused")
    return ImageTokenChoice(DEFAULT_IMAGE_TOKEN, None, "no reserved token: added to the vocabulary")


_PRELUDE = (
    "{%- set _ns = namespace(messages=[]) -%}"
    "{%- for _m in messages -%}"
    "{%- if _m['content'] is string -%}{%- set _text = _m['content'] -%}"
    "{%- else -%}{%- set _parts = namespace(text='') -%}"
    "{%- for _item in _m['content'] -%}"
    "{%- if _item['type'] == 'image' -%}{%- set _parts.text = _parts.text + @IMG@ + '\\n' -%}"
    "{%- elif _item['type'] == 'text' -%}{%- set _parts.text = _parts.text + _item['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set _text = _parts.text -%}{%- endif -%}"
    "{%- set _ns.messages = _ns.messages + [{'role': _m['role'], 'content': _text}] -%}"
    "{%- endfor -%}"
    "{%- set messages = _ns.messages -%}"
)

# For recipients without a chat template (base models): plain question/answer turns.
PLAIN_QA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + eos_token + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"
)


def vision_chat_template(text_template: str | None, image_token: str) -> str:
    """The recipient's template (or plain Q/A turns) behind a prelude that renders each image
    item as the image token followed by a newline, before the text, as LLaVA donors are trained."""
    literal = "'" + image_token.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return _PRELUDE.replace("@IMG@", literal) + (text_template or PLAIN_QA_TEMPLATE)

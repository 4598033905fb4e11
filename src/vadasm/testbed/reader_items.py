"""Generic reading-comprehension items for the class C reader (issue 15, part 3).

Why: a class C graft can only show a gain on a recipient that answers a short question when told
the image's content in words. SmolLM2 cannot (0% on easy-vqa's text oracle), so it is taught short
answers on generated text: a short description of a scene (many object nouns, colours, shapes,
sizes, materials, counts, positions, varied sentences) and a question about it in varied wordings,
with a one-word answer. No image is used, and no question equals an easy-vqa question template once
colour and shape words are masked (`question_template`, checked against `EASY_VQA_TEMPLATES`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

SUFFIX = "Answer the question using a single word or phrase."  # LLaVA-1.5's short-answer suffix
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow", "white", "orange", "purple",
           "pink", "silver", "gold", "beige", "navy", "maroon", "olive", "cyan", "violet", "tan", "lime")
SHAPES = ("circle", "rectangle", "triangle", "square", "star", "oval", "hexagon", "diamond", "heart",
          "pentagon", "octagon", "crescent", "cross", "arrow", "ring", "spiral")
NOUNS = ("cup", "box", "ball", "kite", "sign", "pillow", "rug", "plate", "clock", "lamp", "mirror", "tile",
         "badge", "flag", "sticker", "button", "coin", "window", "table", "hat", "bag", "balloon", "card",
         "tray", "magnet", "stamp", "napkin", "frame", "patch", "cushion", "bowl", "vase", "bottle", "book",
         "chair", "umbrella", "shoe", "pencil", "candle", "bucket", "basket", "towel", "jar", "lid", "toy")
MATERIALS = {"wooden": "wood", "plastic": "plastic", "metal": "metal", "glass": "glass", "paper": "paper",
             "cotton": "cotton", "stone": "stone", "leather": "leather", "ceramic": "ceramic", "rubber": "rubber"}
SIZES = ("small", "large", "tiny", "big", "huge")
POSITIONS = {"on the left": "left", "on the right": "right", "in the middle": "middle", "at the top": "top",
             "at the bottom": "bottom"}
FRAMES = ("picture", "photo", "drawing", "painting", "image", "illustration", "sketch", "poster", "scene",
          "screen", "card", "diagram", "slide", "print", "page")
SURFACES = ("table", "shelf", "floor", "desk", "bench", "tray", "counter", "windowsill")
COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

# easy-vqa's 24 question templates (its train and test questions with colour and shape words masked;
# tests/testbed/test_reader.py re-derives them from the package). No generated question may be one.
EASY_VQA_TEMPLATES = frozenset({
    "does the image contain a {c} shape", "does the image contain a {s}", "does the image not contain a {c} shape",
    "does the image not contain a {s}", "is a {c} shape present", "is a {s} present", "is no {c} shape present",
    "is no {s} present", "is there a {c} shape in the image", "is there a {c} shape",
    "is there a {s} in the image", "is there a {s}", "is there not a {c} shape in the image",
    "is there not a {c} shape", "is there not a {s} in the image", "is there not a {s}",
    "what color is the shape", "what color is the {s}", "what is the color of the shape",
    "what is the color of the {s}", "what is the {c} shape", "what shape does the image contain",
    "what shape is in the image", "what shape is present",
})


def question_template(question: str) -> str:
    """A question with colour and shape words masked ({c}, {s}), lower case, US spelling, no end mark."""
    words = re.sub(r"[?.!,]", " ", question.lower().replace("colour", "color")).split()
    return " ".join("{c}" if w in COLOURS else "{s}" if w in SHAPES else w for w in words)


@dataclass(frozen=True)
class Thing:
    """One object of a scene: a figure (its noun is its shape) or an item (optionally shaped)."""

    noun: str
    colour: str
    shape: str | None
    size: str | None = None
    material: str | None = None  # adjective, e.g. "wooden"
    count: int = 1
    position: str | None = None

    @property
    def name(self) -> str:
        return self.noun if self.count == 1 else plural(self.noun)

    def phrase(self, rng: random.Random) -> str:
        words = [w for w in (self.size, self.colour, self.material) if w] + [self.name]
        text = " ".join(words)
        text = f"{COUNT_WORDS[self.count]} {text}" if self.count > 1 else a(text)
        if self.shape and self.shape != self.noun:
            text += rng.choice((f" shaped like {a(self.shape)}", f" in the shape of {a(self.shape)}",
                                f" with {a(self.shape)} outline"))
        return text + (f" {self.position}" if self.position else "")


@dataclass(frozen=True)
class ReaderItem:
    """One user turn (context, question, maybe the suffix) and its one-word answer."""

    prompt: str
    question: str
    answer: str
    group: str


def a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("x", "s", "ch", "sh")) else "s")


def _scene(rng: random.Random) -> list[Thing]:
    n = rng.choice((1, 1, 2, 2, 3))
    colours = rng.sample(COLOURS, n)
    shapes = rng.sample(SHAPES, n)
    nouns = rng.sample(NOUNS, n)
    positions = rng.sample(list(POSITIONS), n) if n > 1 and rng.random() < 0.4 else [None] * n
    things = []
    for i in range(n):
        size = rng.choice(SIZES) if rng.random() < 0.3 else None
        if rng.random() < 0.5:
            things.append(Thing(shapes[i], colours[i], shapes[i], size, position=positions[i]))
            continue
        material = rng.choice(list(MATERIALS)) if rng.random() < 0.4 else None
        count = rng.choice((2, 3, 4, 5)) if rng.random() < 0.15 else 1
        shape = shapes[i] if rng.random() < 0.6 else None
        things.append(Thing(nouns[i], colours[i], shape, size, material, count, positions[i]))
    return things


def _context(things: list[Thing], frame: str, rng: random.Random) -> str:
    phrases = [t.phrase(rng) for t in things]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    surface = rng.choice(SURFACES)
    many = len(things) > 1 or things[0].count > 1
    text = rng.choice((
        f"The {frame} shows {listed}.", f"In this {frame} you can see {listed}.", f"This {frame} contains {listed}.",
        f"There {'are' if many else 'is'} {listed} in the {frame}.", f"{listed} can be seen in the {frame}.",
        f"A {frame} of {listed}.", f"Here is a {frame} with {listed}.", f"{listed}.",
        f"On the {surface} {'are' if many else 'is'} {listed}.", f"Someone drew {listed}.",
        f"We are looking at {listed}.", f"Description: {listed}.",
    ))
    return text[0].upper() + text[1:]


def _colour_word(rng: random.Random) -> str:
    return rng.choice(("colour", "color"))


def _other(options: tuple[str, ...], taken: set[str], rng: random.Random) -> str:
    return rng.choice([o for o in options if o not in taken])


def _what(things: list[Thing], kind: str, frame: str, rng: random.Random) -> tuple[str, str] | None:
    """An open question (colour, shape, object, count, material, size, position) and its answer."""
    t = rng.choice(things)
    ref, be, col = f"the {t.name}", "is" if t.count == 1 else "are", _colour_word(rng)
    if kind == "colour":
        return rng.choice((f"What {col} {be} {ref}?", f"Which {col} {be} {ref}?", f"{ref} {be} what {col}?",
                           f"Name the {col} of {ref}.", f"Tell me the {col} of {ref}.", f"In which {col} {be} {ref}?",
                           f"What {col} would you call {ref}?", f"Which {col} does {ref} have?")), t.colour
    if kind == "shape":
        if t.shape is None:
            return None
        if t.shape != t.noun:
            return rng.choice((f"What shape {be} {ref}?", f"Which shape does {ref} have?", f"{ref} has what shape?",
                               f"What is the shape of {ref}?", f"Describe the shape of {ref} in one word.",
                               f"What outline does {ref} have?")), t.shape
        one = f"the {t.colour} " + rng.choice(("figure", "one", "thing", "form"))
        single = ("Which shape was drawn?", "Name the shape you see.", "What figure appears here?",
                  "What kind of figure is shown?") if len(things) == 1 else ()
        return rng.choice((f"What shape is {one}?", f"Which shape is drawn in {t.colour}?", f"{one} has which shape?",
                           f"What is {one}?", f"Name {one}.", f"Which figure is {t.colour}?", *single)), t.shape
    if kind == "object":
        return rng.choice((f"Which object is {t.colour}?", f"What is the {t.colour} object?",
                           f"Name the {t.colour} item.", f"What {t.colour} thing is there?",
                           f"Which thing has the {col} {t.colour}?")), t.noun
    if kind == "count":
        return rng.choice((f"How many {plural(t.noun)} are there?", f"How many {plural(t.noun)} can you count?",
                           f"What is the number of {plural(t.noun)}?")), str(t.count)
    if kind == "material" and t.material:
        return rng.choice((f"What {be} {ref} made of?", f"Which material {be} {ref} made from?")), MATERIALS[t.material]
    if kind == "size" and t.size:
        return rng.choice((f"What size {be} {ref}?", f"How big {be} {ref}?")), t.size
    if kind == "position" and t.position:
        return rng.choice((f"Where {be} {ref}?", f"In which part of the {frame} {be} {ref}?")), POSITIONS[t.position]
    return None


def _yes_no(things: list[Thing], kind: str, yes: bool, negated: bool, frame: str, rng: random.Random) -> str | None:
    """A yes/no question whose answer is `yes`; `negated` questions ask about absence ("Is nothing red?")."""
    present = yes != negated
    t = rng.choice(things)
    ref, be = f"the {t.name}", "is" if t.count == 1 else "are"
    if kind == "colour" and rng.random() < 0.5:  # about one object
        absent = _other(COLOURS, {t.colour}, rng)  # drawn either way: a pair's twins share later choices
        c = t.colour if present else absent
        if negated:
            return rng.choice((f"{be} {ref} not {c}?", f"{be} {ref} a {_colour_word(rng)} other than {c}?",
                               f"Is it false that {ref} {be} {c}?", f"{be} {ref} not coloured {c}?"))
        return rng.choice((f"{be} {ref} {c}?", f"{be} {ref} coloured {c}?", f"Would you say {ref} {be} {c}?"))
    if kind == "colour":
        shown, absent = rng.choice([x.colour for x in things]), _other(COLOURS, {x.colour for x in things}, rng)
        c = shown if present else absent
        if negated:
            return rng.choice((f"Is nothing {c}?", f"Is there nothing {c} in the {frame}?",
                               f"Does the {frame} lack anything {c}?", f"Is it true that no {c} object appears?",
                               f"Does the {frame} have no {c} object?", f"Is there not anything {c} in the {frame}?",
                               f"Does the {frame} not show anything {c}?", f"Is there not a single {c} thing?"))
        return rng.choice((f"Is anything {c}?", f"Do you see something {c}?", f"Is there anything {c} in the {frame}?",
                           f"Does the {frame} include something {c}?", f"Can you spot {a(c)} object?"))
    if kind == "shape":
        shapes = {x.shape for x in things if x.shape}
        if not shapes:
            return None
        shown, absent = rng.choice(sorted(shapes)), _other(SHAPES, shapes, rng)
        s = shown if present else absent
        if negated:
            return rng.choice((f"Is no {s} drawn?", f"Does the {frame} lack {a(s)}?", f"Is there no {s} to be seen?",
                               f"Is it true that the {frame} has no {s}?", f"Is nothing shaped like {a(s)}?",
                               f"Does the {frame} not include {a(s)}?", f"Is there not {a(s)} anywhere?",
                               f"Is {a(s)} not drawn?"))
        return rng.choice((f"Is {a(s)} drawn?", f"Can you see {a(s)}?", f"Does the {frame} include {a(s)}?",
                           f"Does anything have the shape of {a(s)}?", f"Is something shaped like {a(s)}?",
                           f"Do you notice {a(s)}?"))
    nouns = {x.noun for x in things}
    shown, absent = rng.choice(sorted(nouns)), _other(NOUNS, nouns, rng)
    n = shown if present else absent
    if negated:
        return rng.choice((f"Is there no {n}?", f"Does the {frame} lack {a(n)}?", f"Is {a(n)} missing?",
                           f"Does the {frame} not show {a(n)}?", f"Is there not {a(n)} anywhere?"))
    return rng.choice((f"Is there {a(n)} anywhere?", f"Does the {frame} show {a(n)}?", f"Can you find {a(n)}?"))


OPEN_KINDS = ("colour", "colour", "colour", "shape", "shape", "shape", "object", "count", "material", "size",
              "position")
YES_NO_KINDS = ("colour", "colour", "shape", "shape", "noun")


def _unit(rng: random.Random, yes_no_share: float, negated_share: float) -> list[tuple[str, str, str, str]]:
    """Two (context, question, answer, group) items: a contrastive yes/no pair (one scene, one context, one
    wording; the asked colour, shape or object is shown in one twin and absent in the other, so only reading
    the context tells the answers apart) or two open questions on two scenes. Empty when a draw fails."""
    if rng.random() < yes_no_share:
        things, frame = _scene(rng), rng.choice(FRAMES)
        context, kind, negated = _context(things, frame, rng), rng.choice(YES_NO_KINDS), rng.random() < negated_share
        state = rng.getstate()
        twins = []
        for yes in (True, False):
            rng.setstate(state)
            twins.append((context, _yes_no(things, kind, yes, negated, frame, rng), "yes" if yes else "no",
                          "yesno_neg" if negated else "yesno"))
        if rng.random() < 0.5:
            twins.reverse()
        return [] if any(q is None for _, q, _, _ in twins) else twins
    out = []
    for _ in range(2):
        things, frame = _scene(rng), rng.choice(FRAMES)
        kind = rng.choice(OPEN_KINDS)
        drawn = _what(things, kind, frame, rng)
        if drawn is None:
            return []
        out.append((_context(things, frame, rng), *drawn, kind if kind in ("colour", "shape", "object") else "other"))
    return out


def reader_items(n: int, seed: int = 0, split: str = "train", suffix_share: float = 0.5, yes_no_share: float = 0.5,
                 negated_share: float = 0.5) -> list[ReaderItem]:
    """`n` items, the same for the same (seed, split), in units of two (`_unit`): a unit is drawn as a
    contrastive yes/no pair (answers exactly balanced) with chance `yes_no_share`, else as two open questions;
    a failed draw (an open kind the scene cannot answer, e.g. material) is redrawn, so the kept share of
    pairs is higher (~0.72 at 0.6, ~0.65 at 0.5). `negated_share` of pairs ask about absence.
    `suffix_share` of prompts end with LLaVA-1.5's short-answer suffix. Batches of an even
    size keep a pair's twins together."""
    rng = random.Random(f"reader-{split}-{seed}")
    items: list[ReaderItem] = []
    while len(items) < n:
        unit = _unit(rng, yes_no_share, negated_share)
        if any(question_template(q) in EASY_VQA_TEMPLATES for _, q, _, _ in unit):
            continue
        for context, question, answer, group in unit:
            question = question[0].upper() + question[1:]
            prompt = context + rng.choice(("\n", "\n", " ")) + question
            if rng.random() < suffix_share:
                prompt += "\n" + SUFFIX
            items.append(ReaderItem(prompt, question, answer, group))
    return items[:n]

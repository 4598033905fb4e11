"""Text oracle and blind scores of a text model on easy-vqa test (issue 15, part 3: the class C control).

    python benchmarks/text_oracle.py MODEL_DIR [--limit 400] [--conditions oracle,blind,...] [--out FILE.json]

The text oracle tells the model the image's content in words ("The image shows a red circle.") before
the question: a class C graft keeps the recipient's language model, so this is its ceiling. Blind asks
the question alone (the answer prior). Each runs with easy-vqa's bare question and with LLaVA-1.5's
short-answer suffix. The `rephrased-*` conditions ask the same items in other wordings, written here and
used by no training recipe (tests/testbed/test_reader.py checks the reader's generator never makes them),
to show a score is not tied to easy-vqa's question templates. Items: the easy-vqa test questions drawn as
`vadasm eval --limit N` draws them (seed 0) whose image's colour and shape are known (367 of 400).
Prompts go through the model's chat template as `vadasm eval` renders them; the harness metric (exact
match of the reply's first line) scores them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from vadasm.errors import VadasmError
from vadasm.eval.backends import Decoding, Request, load_backend
from vadasm.eval.easyvqa import COLORS, SHAPES, image_labels, load_split
from vadasm.eval.task_protocol import Item
from vadasm.eval.tasks import GENERATIVE_TASKS

SUFFIX = "Answer the question using a single word or phrase."
REPHRASED = {  # same type and answer as the easy-vqa question; {c}/{s}: the colour/shape it names
    "what_color": ("Which hue does the {ref} have?", "Say which colour the {ref} is painted in.",
                   "What's the {ref}'s colouring?"),
    "what_shape": ("What geometric figure is depicted?", "Identify the figure's geometry in one word.",
                   "The picture depicts which geometric shape?"),
    "yesno_color": ("Is the figure painted {c}?", "Does the drawn figure appear {c}?",
                    "Is {c} the colour of the figure?"),
    "yesno_color_neg": ("Is the figure painted some colour besides {c}?", "Would it be wrong to call the figure {c}?",
                        "Is {c} absent from the picture?"),
    "yesno_shape": ("Is the figure a {s}?", "Does the picture depict a {s}?", "Is the drawn form a {s}?"),
    "yesno_shape_neg": ("Is the figure something other than a {s}?", "Does the picture fail to depict a {s}?",
                        "Is a {s} absent from the picture?"),
}


def rephrase(question: str, qtype: str, index: int) -> str:
    """An easy-vqa question in another wording with the same answer (the `index`-th of its type's three)."""
    words = question.lower().rstrip("?").split()
    colour = next((w for w in words if w in COLORS), "")
    shape = next((w for w in words if w in SHAPES), "")
    template = REPHRASED[qtype][index % len(REPHRASED[qtype])]
    return template.format(c=colour, s=shape, ref=shape or "shape")


def conditions(labels: dict[Path, tuple[str, str]]) -> dict:
    """Condition name -> prompt builder (item, index) -> text."""
    def told(item: Item) -> str:
        return "The image shows a {} {}.\n".format(*labels[item.image])

    def other(item: Item, n: int) -> str:
        return rephrase(item.text, item.group, n)

    return {
        "oracle": lambda i, n: told(i) + i.text,
        "oracle+suffix": lambda i, n: f"{told(i)}{i.text}\n{SUFFIX}",
        "blind": lambda i, n: i.text,
        "blind+suffix": lambda i, n: f"{i.text}\n{SUFFIX}",
        "rephrased-oracle": lambda i, n: told(i) + other(i, n),
        "rephrased-oracle+suffix": lambda i, n: f"{told(i)}{other(i, n)}\n{SUFFIX}",
        "rephrased-blind": lambda i, n: other(i, n),
    }


def run(model_dir: Path, limit: int, names: list[str], out_file: Path | None = None) -> dict:
    """Score every condition in `names`, rewriting `out_file` after each (a long run keeps what it has)."""
    task = GENERATIVE_TASKS["easyvqa"]
    labels = image_labels(load_split("test"))
    items = [i for i in task.items("test", limit, 0) if i.image in labels]
    makers = conditions(labels)
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise VadasmError(f"--conditions: unknown {', '.join(unknown)}; choose from {', '.join(makers)}")
    backend = load_backend(model_dir)
    out: dict = {"model": str(model_dir), "limit": limit, "n": len(items), "conditions": {}}
    for name in names:
        start = time.time()
        prompts = [makers[name](item, n) for n, item in enumerate(items)]
        replies = backend.generate([Request(p) for p in prompts], Decoding(max_new_tokens=task.max_new_tokens),
                                   desc=name, progress=False)
        per = defaultdict(list)
        for reply, item in zip(replies, items):
            per[item.group].append(task.score(reply, item))
        scores = [v for values in per.values() for v in values]
        out["conditions"][name] = {
            "all": round(sum(scores) / len(scores), 4),
            "groups": {g: round(sum(v) / len(v), 4) for g, v in sorted(per.items())},
            "seconds": round(time.time() - start, 1),
            "examples": [[p, r] for p, r in list(zip(prompts, replies))[:6]],
        }
        print(f"{model_dir.name} {name} n={len(scores)} all={100 * out['conditions'][name]['all']:.1f}",
              {g: round(100 * v, 1) for g, v in out["conditions"][name]["groups"].items()},
              f"{time.time() - start:.0f}s", flush=True)
        if out_file:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(json.dumps(out, indent=1) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a text model folder (e.g. ~/.cache/vadasm/testbed/smollm2)")
    parser.add_argument("--limit", type=int, default=400, help="easy-vqa test questions drawn (seed 0)")
    parser.add_argument("--conditions", default="oracle,oracle+suffix,blind,blind+suffix,rephrased-oracle,"
                        "rephrased-oracle+suffix,rephrased-blind")
    parser.add_argument("--out", type=Path, help="write the scores (JSON) here")
    args = parser.parse_args()
    try:
        run(args.model.expanduser(), args.limit, args.conditions.split(","), args.out)
    except VadasmError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

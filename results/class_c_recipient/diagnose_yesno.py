"""Why the reader answered "yes" to most yes/no questions: checks on the generated items and on a model.

    python results/class_c_recipient/diagnose_yesno.py [--negated-share 0.5] [--yes-no-share 0.5]
        [--model DIR] [--n 64] [--out FILE.json]

Data: the answer balance per group; how well the question alone predicts yes/no (naive Bayes on its words,
fitted on half the items, scored on the other half: 50% means wording gives nothing away); and how often
the answer is "yes" when the asked colour, shape or object is named in the context: with half the
questions negated that is 50%, so "the asked word is in the context" says nothing about the answer on its
own, and the model must learn presence and negation together (an XOR) before either pays off.
Model (optional): mean log P(yes) - log P(no) at the first answer token and mean answer loss per group and
answer on `--n` val items (prompts through the chat template as in training).
"""

import argparse
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

from vadasm.testbed.reader_items import COLOURS, NOUNS, SHAPES, reader_items

CONTENT = set(COLOURS) | set(SHAPES) | set(NOUNS)


def words(text: str) -> list[str]:
    return re.sub(r"[?.,]", " ", text.lower()).split()


def data_checks(items: list) -> dict:
    yes_no = [i for i in items if i.group.startswith("yesno")]
    half = len(yes_no) // 2
    prior, counts = Counter(), {"yes": Counter(), "no": Counter()}
    for item in yes_no[:half]:
        prior[item.answer] += 1
        counts[item.answer].update(set(words(item.question)))

    def guess(question: str) -> str:
        score = {a: math.log(prior[a]) + sum(math.log((counts[a][w] + 1) / (prior[a] + 2))
                                             for w in set(words(question))) for a in prior}
        return max(score, key=score.get)

    named = defaultdict(Counter)  # is the asked word in the context -> answers
    for item in yes_no:
        asked = [w for w in words(item.question) if w in CONTENT]
        context = set(words(item.prompt[: item.prompt.index(item.question)]))
        if asked:
            named["asked word in context" if asked[-1] in context else "not in context"][item.answer] += 1
    return {
        "answers": {f"{g} {a}": c for (g, a), c in sorted(Counter((i.group, i.answer) for i in yes_no).items())},
        "question_only_naive_bayes_accuracy": round(sum(guess(i.question) == i.answer for i in yes_no[half:])
                                                    / (len(yes_no) - half), 4),
        "yes_rate": {k: round(c["yes"] / sum(c.values()), 4) for k, c in named.items()},
    }


def model_checks(model_dir: Path, items: list) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    first = {a: [tokenizer.encode(w, add_special_tokens=False)[0] for w in (a, a.capitalize())] for a in ("yes", "no")}
    margin, loss = defaultdict(list), defaultdict(list)
    for item in items:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": item.prompt}], add_generation_prompt=True,
                                               tokenize=False)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        answer = tokenizer(item.answer, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = model(input_ids=torch.cat([ids, answer], 1)).logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)
        key = f"{item.group} {item.answer}" if item.group.startswith("yesno") else item.group
        loss[key].append(-logp.gather(1, answer[0][:, None]).mean().item())
        if item.group.startswith("yesno"):
            margin[key].append((torch.logsumexp(logp[0, first["yes"]], 0) - torch.logsumexp(logp[0, first["no"]], 0))
                               .item())
    mean = lambda v: round(sum(v) / len(v), 3)  # noqa: E731
    return {"model": str(model_dir), "n": len(items), "answer_loss": {k: mean(v) for k, v in sorted(loss.items())},
            "logp_yes_minus_no": {k: mean(v) for k, v in sorted(margin.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--negated-share", type=float, default=0.5)
    parser.add_argument("--yes-no-share", type=float, default=0.5)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shares = dict(yes_no_share=args.yes_no_share, negated_share=args.negated_share)
    out = {"shares": shares, "data": data_checks(reader_items(4000, 0, "train", **shares))}
    if args.model:
        out["model"] = model_checks(args.model.expanduser(), reader_items(args.n, 0, "val", **shares))
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

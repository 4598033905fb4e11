"""Graft quality on the offline testbed, with every control, in one command.

    python benchmarks/graft_quality.py [--limit 200] [--arith-limit 200] [--maps lstsq,procrustes,omp] [--svd]
        [--regmean] [--tuned TUNE_RESULT.json | --tuned KEY=VALUE,...] [--only A|C] [--seed 0] [--out DIR]

Class A: llava-smollm2 (donor) -> smollm2-arith (recipient), base smollm2 (and, with --svd, the same
graft with the projector at 95% SVD variance; with --regmean the RegMean language merge, with --tuned a
`vadasm tune` winner). Class C: llava-gemma3 (donor) -> smollm2, one graft
per map, calibrated on easy-vqa *train* images. Every graft is scored on held-out easy-vqa test
questions with the image, blind and with shuffled images, beside its donor and the recipient alone;
class A also on arithmetic beside smollm2 and smollm2-arith; class C also beside a text oracle (the
recipient told the image's words in text), the ceiling of any graft that keeps the recipient's LM.
Prints the tables and verdicts and writes them (Markdown + JSON) under --out. Needs `vadasm testbed build` first.

The harness metric is VQA exact match on the reply's first line. Recipients never taught easy-vqa's
one-word answers (class C keeps SmolLM2-Instruct's language model) answer in sentences, so beside it
we print a diagnostic, labelled as such and computed identically for every model and control:
"one-answer match" = exactly one candidate answer of the question's type (a colour, a shape, or
yes/no) occurs in the reply, and it is the reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vadasm.cli.tune_cmd import parse_pairs
from vadasm.eval.easyvqa import COLORS, SHAPES, load_split
from vadasm.eval.harness import EvalReport
from vadasm.eval.metrics import normalize_vqa_answer
from vadasm.eval.report import format_table
from vadasm.eval.tasks import GENERATIVE_TASKS
from vadasm.graft import GraftOptions, graft, record_scores
from vadasm.graft.measure import measure_graft, scores_record, verdicts
from vadasm.testbed.paths import artefact_dir, is_built

NEEDED = {"A": ("smollm2", "smollm2-arith", "llava-smollm2"), "C": ("smollm2", "gemma3-270m", "llava-gemma3")}
CANDIDATES = {"what_color": COLORS, "what_shape": SHAPES}


def _graft(work: Path, name: str, donor: str, recipient: str, **options) -> tuple[Path, dict]:
    out = work / name
    result = graft(artefact_dir(donor), artefact_dir(recipient), out, GraftOptions.flat(force=True, **options))
    print(f"\n== {name}: {donor} -> {recipient}")
    print("\n".join(result.lines()))
    inputs = json.loads((out / "vadasm_config.json").read_text())["inputs"]  # testbed artefacts get rebuilt
    return out, {**result.to_dict(), "inputs": inputs}


def one_answer_match(reply: str, reference: str, group: str) -> float:
    """Diagnostic (not the harness metric): exactly one candidate of the question's type is in the
    reply, and it is the reference."""
    words = set(normalize_vqa_answer(reply).split())
    found = {c for c in CANDIDATES.get(group, ("yes", "no")) if c in words}
    return float(found == {reference})


def diagnostic_lines(report: EvalReport, limit: int, seed: int) -> list[str]:
    items = GENERATIVE_TASKS["easyvqa"].items(report.split, limit, seed)
    lines = ["diagnostic one-answer match (same replies, lenient format; not the harness metric):"]
    for score in report.scores:
        if score.task != "easyvqa" or score.predictions is None:
            continue
        value = sum(one_answer_match(r, i.references[0], i.group) for r, i in zip(score.predictions, items))
        lines.append(f"{score.model} {score.condition}: {100 * value / len(items):.1f}%")
    return lines


def text_oracle(recipient: Path, n_patches: int, limit: int, seed: int) -> dict:
    """The ceiling of a graft that keeps the recipient's language model: the recipient asked the same
    test questions with the image replaced by the words its image tokens stand for (" red circle red
    circle ...", as the donor's projector was fitted to produce). Only images whose colour and shape
    the test questions reveal are kept; labels are read off test questions and used for nothing else."""
    from vadasm.eval.backends import Decoding, Request, load_backend
    from vadasm.eval.easyvqa import image_labels
    from vadasm.testbed.vision import patch_roles

    task = GENERATIVE_TASKS["easyvqa"]
    labels = image_labels(load_split("test"))
    items = [i for i in task.items("test", limit, seed) if i.image in labels]
    roles = patch_roles(n_patches).tolist()
    requests = [Request(" ".join(labels[i.image][r] for r in roles) + "\n" + i.text) for i in items]
    replies = load_backend(recipient).generate(requests, Decoding(max_new_tokens=task.max_new_tokens),
                                               desc="text oracle", progress=False)
    harness = sum(task.score(r, i) for r, i in zip(replies, items)) / len(items)
    lenient = sum(one_answer_match(r, i.references[0], i.group) for r, i in zip(replies, items)) / len(items)
    return {"n": len(items), "vqa_accuracy": harness, "one_answer_match": lenient}


def tuned_options(spec: str) -> dict:
    """Graft options from a `vadasm tune` result (its validation winner over the fixed --set options)
    or from KEY=VALUE,KEY=VALUE."""
    if spec.endswith(".json"):
        tuned = json.loads(Path(spec).read_text())
        best = tuned["best"]
        if not best.get("params"):
            raise SystemExit(f"{spec}: the validation winner is {best['kind']!r}, not a graft to confirm")
        fixed = {k: v for k, v in tuned.get("fixed_options", {}).items() if k != "base"}  # base: passed here
        return fixed | best["params"]
    return parse_pairs(spec.split(","), "--tuned")


def class_a(args, work: Path, record: dict) -> tuple[str, list[EvalReport], list[str]]:
    base = str(artefact_dir("smollm2"))
    variants = {"graft": {}}
    if args.svd:
        variants["graft-svd95"] = {"projector_variance": 0.95}
    if args.tuned is not None:
        variants["graft-tuned"] = tuned_options(args.tuned)
    if args.protect0:
        variants["graft-protect0"] = {"protect_ratio": 0.0}
    if args.regmean:
        variants["graft-regmean"] = {"merge_method": "regmean", "donor_data": "easyvqa", "recipient_data": "arith"}
    models = {}
    for name, options in variants.items():
        folder = "classA" + name.removeprefix("graft")
        models[name], record["grafts"][folder] = _graft(work, folder, "llava-smollm2", "smollm2-arith", base=base,
                                                        seed=args.seed, **options)
    # a projector-only variant has the plain graft's language model: no arithmetic run of its own
    arith_models = {n: path for n, path in models.items() if "projector_variance" not in variants[n]}
    a_out = models["graft"]
    models.update({"donor": artefact_dir("llava-smollm2"), "recipient": artefact_dir("smollm2-arith")})
    vqa = measure_graft(models, ["easyvqa"], limit=args.limit, seed=args.seed, keep_predictions=True)
    arith_models.update({"recipient": artefact_dir("smollm2-arith"), "smollm2": artefact_dir("smollm2")})
    arith = measure_graft(arith_models, ["arith"], limit=args.arith_limit, seed=args.seed)
    found = [v for name in models if name.startswith("graft") for v in verdicts(vqa, graft=name)]
    lines = [line for v in found for line in v.lines]
    r, b = (arith.get(m, "arith", "text").value for m in ("recipient", "smollm2"))
    kept = {}
    for name in (m for m in arith_models if m.startswith("graft")):
        g = arith.get(name, "arith", "text").value
        kept[name] = (g - b) / (r - b) if r > b else None
        lines.append(f"arith: {name} {100 * g:.1f}%, recipient {100 * r:.1f}%, smollm2 {100 * b:.1f}%: "
                     + (f"{name} keeps {100 * kept[name]:.0f}% of the recipient's gain over smollm2"
                        if kept[name] is not None else "the recipient has no gain over smollm2 to keep"))
    lines += diagnostic_lines(vqa, args.limit, args.seed)
    record_scores(a_out, {**scores_record(vqa, found), "arith": scores_record(arith, [])})
    record["evals"]["A"] = {"easyvqa": scores_record(vqa, found), "arith": scores_record(arith, []),
                            "arith_gain_kept": kept}
    return "Class A: llava-smollm2 -> smollm2-arith (base smollm2)", [vqa, arith], lines


def class_c(args, work: Path, record: dict) -> tuple[str, list[EvalReport], list[str]]:
    calibration = str(Path(load_split("train")[0].image_path).parent)  # train images only, never test
    maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    models = {}
    for method in maps:
        path, info = _graft(work, f"classC-{method}", "llava-gemma3", "smollm2", map_method=method,
                            calibration_images=calibration, seed=args.seed, min_anchors=args.min_anchors,
                            heldout=min(1000, args.min_anchors))
        models[f"graft-{method}"] = path
        record["grafts"][f"classC-{method}"] = info
    models.update({"donor": artefact_dir("llava-gemma3"), "recipient": artefact_dir("smollm2")})
    vqa = measure_graft(models, ["easyvqa"], limit=args.limit, seed=args.seed, keep_predictions=True)
    found = [v for m in maps for v in verdicts(vqa, graft=f"graft-{m}")]
    for m, v in zip(maps, found):
        record_scores(models[f"graft-{m}"], scores_record(vqa, [v]))
    vision = json.loads((artefact_dir("llava-gemma3") / "config.json").read_text())["vision_config"]
    oracle = text_oracle(artefact_dir("smollm2"), (vision["image_size"] // vision["patch_size"]) ** 2,
                         args.limit, args.seed)
    record["evals"]["C"] = {"easyvqa": scores_record(vqa, found), "text_oracle": oracle}
    fits = record["grafts"][f"classC-{maps[0]}"]
    lines = [f"embedding maps on {fits['anchors']} anchors; held-out retrieval among all SmolLM2 tokens "
             "(top-1 % / top-10 % / centred cosine); nearest-token agreement of projector outputs on 64 train images:"]
    lines += [f"{m['method']}{' (control)' * m['control']}: {100 * m['quality']['top1']:.1f} / "
              f"{100 * m['quality']['top10']:.1f} / {m['quality']['cosine']:.3f}; projector agreement "
              f"{100 * (m['projector_token_agreement'] or 0):.1f}%" for m in fits["maps"]]
    lines.append(f"projector hidden width: {fits['projector'].get('hidden')}; relative error of the cut on "
                 f"calibration features: {fits['projector'].get('resize_relative_error_on_calibration')}")
    lines += [line for v in found for line in v.lines] + diagnostic_lines(vqa, args.limit, args.seed)
    lines.append(f"text oracle (the recipient told the image's words as text instead of the image, n={oracle['n']}): "
                 f"harness {100 * oracle['vqa_accuracy']:.1f}%, "
                 f"one-answer match {100 * oracle['one_answer_match']:.1f}%: what a graft that keeps this recipient's "
                 "language model could reach with a perfect map")
    return "Class C: llava-gemma3 -> smollm2 (one graft per map)", [vqa], lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200, help="easy-vqa test questions per model and condition")
    parser.add_argument("--arith-limit", type=int, default=200, help="arithmetic test problems per model")
    parser.add_argument("--maps", default="lstsq,procrustes,omp", help="class C: one graft per map")
    parser.add_argument("--svd", action="store_true", help="class A: also the 95%%-variance SVD projector")
    parser.add_argument("--tuned", default=None,
                        help="class A: also the graft with these options, confirmed on test: a `vadasm tune` "
                             "tune_result.json (its validation winner) or KEY=VALUE,... (beta=1.5,merge_method=ties)")
    parser.add_argument("--protect0", action="store_true", help="class A: also the graft with no protected layers")
    parser.add_argument("--regmean", action="store_true",
                        help="class A: also the RegMean graft (defaults; Grams on easyvqa / arith train)")
    parser.add_argument("--only", choices=("A", "C"), default=None)
    parser.add_argument("--work", default="/tmp/vadasm-graft-quality", help="where the grafts are written")
    parser.add_argument("--out", default="results/graft", help="where the tables go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-anchors", type=int, default=1000, help="(smoke tests on tiny vocabularies)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scenarios = [args.only] if args.only else ["A", "C"]
    missing = sorted({a for s in scenarios for a in NEEDED[s] if not is_built(a)})
    if missing:
        raise SystemExit(f"testbed artefacts not built: {', '.join(missing)} (run `vadasm testbed build`)")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record = {"args": vars(args), "grafts": {}, "evals": {}}
    sections = [(class_a if s == "A" else class_c)(args, work, record) for s in scenarios]

    command = "python benchmarks/graft_quality.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if k in ("limit", "arith_limit", "maps", "only", "tuned", "seed", "out") and v is not None
    ) + "".join(f" --{flag}" for flag in ("svd", "protect0", "regmean") if getattr(args, flag))
    markdown = [f"Measured by `{command}` ({time.time() - started:.0f}s, CPU). Accuracies in %, easy-vqa test split.",
                ""]
    for title, reports, lines in sections:
        print(f"\n### {title}")
        markdown.append(f"### {title}\n")
        for report in reports:
            print(format_table(report))
            markdown += [format_table(report, markdown=True), ""]
        print("\n".join(lines))
        markdown += [f"- {line}" for line in lines] + [""]
    fingerprints = {f"{role} {i['path'].rsplit('/', 1)[-1]}": i["fingerprint"][:16]
                    for g in record["grafts"].values() for role, i in g["inputs"].items()}
    markdown.append("Inputs (vadasm fingerprints): " + ", ".join(f"{k} {v}" for k, v in sorted(fingerprints.items())))
    name = "graft_quality" + (f"_{args.only}" if args.only else "")
    (out / f"{name}.md").write_text("\n".join(markdown) + "\n")
    (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out / (name + '.md')} and {out / (name + '.json')}")


if __name__ == "__main__":
    main()

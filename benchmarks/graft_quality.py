"""Graft quality on the offline testbed, with every control, in one command.

    python benchmarks/graft_quality.py [--limit 300] [--arith-limit 300] [--out benchmarks/results]

Class A: llava-smollm2 (donor) -> smollm2-arith (recipient), base smollm2; plus the same graft with
the projector at 95% SVD variance. Class C: llava-gemma3 (donor) -> smollm2, one graft per map
(lstsq, procrustes, omp), calibrated on easy-vqa *train* images. Every graft is scored on held-out
easy-vqa test questions with the image, blind and with shuffled images, beside its donor and the
recipient alone; class A also on arithmetic beside smollm2 and smollm2-arith. Prints the tables and
the verdicts and writes them (Markdown + JSON) under --out. Needs `vadasm testbed build` first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vadasm.eval.easyvqa import load_split
from vadasm.eval.report import format_table
from vadasm.graft import GraftOptions, graft, record_scores
from vadasm.graft.measure import measure_graft, scores_record, verdicts
from vadasm.testbed.paths import artefact_dir, is_built

NEEDED = ("smollm2", "smollm2-arith", "llava-smollm2", "gemma3-270m", "llava-gemma3")
MAPS = ("lstsq", "procrustes", "omp")


def _graft(work: Path, name: str, donor: str, recipient: str, **options) -> tuple[Path, dict]:
    out = work / name
    result = graft(artefact_dir(donor), artefact_dir(recipient), out, GraftOptions(force=True, **options))
    print(f"\n== {name}: {donor} -> {recipient}")
    print("\n".join(result.lines()))
    return out, result.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=300, help="easy-vqa test questions per model and condition")
    parser.add_argument("--arith-limit", type=int, default=300, help="arithmetic test problems per model")
    parser.add_argument("--work", default="/tmp/vadasm-graft-quality", help="where the grafts are written")
    parser.add_argument("--out", default="benchmarks/results", help="where the tables go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("A", "C"), default=None)
    parser.add_argument("--min-anchors", type=int, default=1000, help="(smoke tests on tiny vocabularies)")
    args = parser.parse_args()
    missing = [a for a in NEEDED if not is_built(a)]
    if missing:
        raise SystemExit(f"testbed artefacts not built: {', '.join(missing)} (run `vadasm testbed build`)")
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    calibration = str(Path(load_split("train")[0].image_path).parent)  # train images only, never test
    started = time.time()
    sections, record = [], {"limit": args.limit, "seed": args.seed, "grafts": {}, "evals": {}}

    if args.only in (None, "A"):
        a_out, a_info = _graft(work, "classA", "llava-smollm2", "smollm2-arith", base=str(artefact_dir("smollm2")),
                               seed=args.seed)
        a_svd, a_svd_info = _graft(work, "classA-svd95", "llava-smollm2", "smollm2-arith",
                                   base=str(artefact_dir("smollm2")), projector_variance=0.95, seed=args.seed)
        record["grafts"].update({"classA": a_info, "classA-svd95": a_svd_info})
        models = {"graft": a_out, "graft-svd95": a_svd, "donor": artefact_dir("llava-smollm2"),
                  "recipient": artefact_dir("smollm2-arith")}
        vqa = measure_graft(models, ["easyvqa"], limit=args.limit, seed=args.seed)
        arith_models = {"graft": a_out, "recipient": artefact_dir("smollm2-arith"), "smollm2": artefact_dir("smollm2")}
        arith = measure_graft(arith_models, ["arith"], limit=args.arith_limit, seed=args.seed)
        found = verdicts(vqa) + verdicts(vqa, graft="graft-svd95")
        lines = [line for v in found for line in v.lines]
        g, r, b = (arith.get(m, "arith", "text").value for m in ("graft", "recipient", "smollm2"))
        kept = (g - b) / (r - b) if r > b else None
        lines.append(f"arith: graft {100 * g:.1f}%, recipient {100 * r:.1f}%, smollm2 {100 * b:.1f}%: "
                     + (f"the graft keeps {100 * kept:.0f}% of the recipient's gain over smollm2" if kept is not None
                        else "the recipient has no gain over smollm2 to keep"))
        record_scores(a_out, {**scores_record(vqa, found), "arith": scores_record(arith, [])})
        record["evals"]["A"] = {"easyvqa": scores_record(vqa, found), "arith": scores_record(arith, []),
                                "arith_gain_kept": kept}
        sections.append(("Class A: llava-smollm2 -> smollm2-arith (base smollm2)", [vqa, arith], lines))

    if args.only in (None, "C"):
        models = {}
        for method in MAPS:
            path, info = _graft(work, f"classC-{method}", "llava-gemma3", "smollm2", map_method=method,
                                calibration_images=calibration, seed=args.seed, min_anchors=args.min_anchors,
                                heldout=min(1000, args.min_anchors))
            models[f"graft-{method}"] = path
            record["grafts"][f"classC-{method}"] = info
        models.update({"donor": artefact_dir("llava-gemma3"), "recipient": artefact_dir("smollm2")})
        vqa = measure_graft(models, ["easyvqa"], limit=args.limit, seed=args.seed)
        found = [v for m in MAPS for v in verdicts(vqa, graft=f"graft-{m}")]
        for m, v in zip(MAPS, found):
            record_scores(models[f"graft-{m}"], scores_record(vqa, [v]))
        record["evals"]["C"] = {"easyvqa": scores_record(vqa, found)}
        fits = record["grafts"]["classC-lstsq"]
        map_lines = [f"embedding maps on {fits['anchors']} anchors, held-out retrieval among all SmolLM2 tokens "
                     "(top-1 / top-10 / cosine) and nearest-token agreement of projector outputs on train images:"]
        map_lines += [f"{m['method']}{' (control)' * m['control']}: {100 * m['quality']['top1']:.1f} / "
                      f"{100 * m['quality']['top10']:.1f} / {m['quality']['cosine']:.3f}; projector agreement "
                      f"{100 * (m['projector_token_agreement'] or 0):.1f}%" for m in fits["maps"]]
        map_lines.append(f"projector hidden width: {fits['projector'].get('hidden')}; relative error of the cut on "
                         f"calibration features: {fits['projector'].get('resize_relative_error_on_calibration')}")
        sections.append(("Class C: llava-gemma3 -> smollm2 (one graft per map)", [vqa],
                         map_lines + [line for v in found for line in v.lines]))

    markdown = [f"Measured by `python benchmarks/graft_quality.py --limit {args.limit}` "
                f"({time.time() - started:.0f}s, CPU). Accuracies in %, easy-vqa test split.", ""]
    for title, reports, lines in sections:
        print(f"\n### {title}")
        markdown.append(f"### {title}\n")
        for report in reports:
            print(format_table(report))
            markdown += [format_table(report, markdown=True), ""]
        print("\n".join(lines))
        markdown += [f"- {line}" for line in lines] + [""]
    (out / "graft_quality.md").write_text("\n".join(markdown) + "\n")
    (out / "graft_quality.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out / 'graft_quality.md'} and {out / 'graft_quality.json'}")


if __name__ == "__main__":
    main()

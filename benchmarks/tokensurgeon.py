"""Token surgery Gemma 3 270M <- SmolLM2-135M's tokenizer: vadasm (omp, lstsq, procrustes) vs mergekit-tokensurgeon.

    python benchmarks/tokensurgeon.py --stage retrieval    # held-out token retrieval (minutes)
    python benchmarks/tokensurgeon.py --stage surgery      # full surgeries, vadasm and mergekit (~30 min each omp)
    python benchmarks/tokensurgeon.py --stage perplexity   # perplexity of every output on the same text

MODEL is the testbed's gemma3-270m, DONOR the testbed's smollm2 (`vadasm testbed build --only smollm2
--only gemma3-270m`); mergekit 0.1.5 runs from its own venv (`--mergekit-python`). Stages add their
numbers to --out (JSON); surgeries are reused from --work when present.

Retrieval: anchors are the tokens both vocabularies spell the same (vadasm's matching). A seeded
--heldout share of them is left out of the fit; each method predicts the held-out tokens' Gemma rows
from their SmolLM2 rows, and a hit is a prediction whose nearest Gemma row (cosine, all 262,144) is
the token's own. OMP costs a pass over all anchors per atom and token, so mergekit's own `batch_omp`
(k=64) scores the first --omp-heldout of them, vadasm's omp the first --parity (and is compared
with mergekit's there: chosen atoms and predicted rows); lstsq/procrustes and the mean-row control
are scored on both sets.

Perplexity: every output reads the same text (the project's held-out perplexity prose, docstrings of
standard-library modules, `vadasm.eval.tasks.perplexity_texts('test')`) with SmolLM2's tokenizer, bos
prepended; Gemma (own tokenizer) and SmolLM2 are the references. Bits per byte compare tokenizers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

from vadasm.graft.embedding_maps import shared_anchors, split_anchors
from vadasm.testbed.paths import artefact_dir, is_built
from vadasm.tokensurgeon import omp_combination, predict_rows, read_tokenizer, retrieval_top1

EMBED = "model.embed_tokens.weight"
MK_OMP = """
import sys, torch
from mergekit.tokensurgeon import batch_omp
data = torch.load(sys.argv[1])
idx, coef = batch_omp(data["targets"], data["atoms"], data["k"])
torch.save({"indices": idx, "coeffs": coef}, sys.argv[2])
"""


def _embed(folder: Path) -> torch.Tensor:
    with safe_open(folder / "model.safetensors", "pt") as f:
        return f.get_tensor(EMBED).float()


def _score(pred: torch.Tensor, vocab: torch.Tensor, truth: torch.Tensor) -> dict:
    cos = torch.nn.functional.cosine_similarity(pred.float(), vocab[truth], dim=1)
    return {"top1": round(retrieval_top1(pred, vocab, truth), 4), "mean_cosine": round(float(cos.mean()), 4),
            "n": len(truth)}


def retrieval(args, model_dir: Path, donor_dir: Path) -> dict:
    d_tok, m_tok = read_tokenizer(donor_dir), read_tokenizer(model_dir)
    d_ids, m_ids = shared_anchors(d_tok.strings, m_tok.strings)
    fit, held = split_anchors(len(d_ids), args.heldout, torch.Generator().manual_seed(args.seed))
    donor_e, model_e = _embed(donor_dir), _embed(model_dir)
    x_fit, y_fit = donor_e[d_ids[fit]], model_e[m_ids[fit]]
    targets, truth = donor_e[d_ids[held]], m_ids[held]
    out = {"anchors": len(d_ids), "fit": len(fit), "heldout": len(held), "k": args.k, "sets": {}}
    sets = {"heldout": len(held), "omp_heldout": args.omp_heldout, "parity": args.parity}
    preds = {}
    for method in ("lstsq", "procrustes"):
        preds[method] = predict_rows(method, targets, x_fit, y_fit)
    preds["mean_row_control"] = y_fit.mean(0).expand(len(held), -1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    n = args.omp_heldout
    torch.save({"targets": targets[:n], "atoms": x_fit, "k": args.k}, work / "omp_in.pt")
    subprocess.run([args.mergekit_python, "-c", MK_OMP, str(work / "omp_in.pt"), str(work / "omp_out.pt")],
                   check=True)
    mk = torch.load(work / "omp_out.pt")
    out["mergekit_batch_omp_seconds"] = round(time.perf_counter() - started, 1)
    preds["mergekit_omp"] = torch.bmm(mk["coeffs"].unsqueeze(1), y_fit[mk["indices"]].float()).squeeze(1)
    started = time.perf_counter()
    idx, coef = omp_combination(targets[:args.parity], x_fit, args.k)
    out["vadasm_omp_seconds"] = round(time.perf_counter() - started, 1)
    preds["vadasm_omp"] = torch.einsum("bk,bkd->bd", coef, y_fit.double()[idx]).float()
    same_sets = [set(a) == set(b) for a, b in zip(idx.tolist(), mk["indices"][:args.parity].tolist(), strict=True)]
    diff = (preds["vadasm_omp"] - preds["mergekit_omp"][:args.parity]).norm(dim=1)
    out["omp_parity"] = {"n": args.parity, "same_atom_sets": round(sum(same_sets) / len(same_sets), 4),
                         "relative_row_difference_median": round(float(
                             (diff / preds["mergekit_omp"][:args.parity].norm(dim=1)).median()), 6)}
    for name, size in sets.items():
        out["sets"][name] = {m: _score(p[:size], model_e, truth[:size]) for m, p in preds.items() if len(p) >= size}
    return out


def _timed(cmd: list[str], log: Path) -> dict:
    """Run under /usr/bin/time -v (wall seconds, peak RSS), or read the log of an earlier run."""
    if not log.is_file() or "Elapsed (wall clock)" not in log.read_text():
        with log.open("w") as handle:
            subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=handle, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text)[1]
    seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)[1])
    return {"wall_seconds": round(seconds, 1), "peak_rss_mib": round(rss / 1024), "log": str(log)}


def surgery(args, model_dir: Path, donor_dir: Path) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    vadasm = str(Path(sys.executable).with_name("vadasm"))
    for method in args.methods:
        out = work / f"vadasm_{method}"
        cmd = [vadasm, "tokensurgeon", str(model_dir), str(donor_dir), str(out), "--method", method,
               "-k", str(args.k), "--quiet"]
        runs[f"vadasm_{method}"] = _timed(cmd, work / f"vadasm_{method}.log")
        runs[f"vadasm_{method}"]["result"] = json.loads((out / "vadasm_config.json").read_text())["result"]
    if not args.no_mergekit:
        cmd = [args.mergekit, str(model_dir), str(donor_dir), str(work / "mk_omp"), "-k", str(args.k)]
        runs["mergekit_omp"] = _timed(cmd, work / "mk_omp.log")
    return runs


@torch.no_grad()
def _perplexity(folder: Path, tokenizer_folder: Path, texts: list[str]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    nll, tokens, nbytes = 0.0, 0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        ids = torch.tensor([[tok.bos_token_id, *ids]])
        logits = model(ids).logits[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        tokens += ids.shape[1] - 1
        nbytes += len(text.encode())
    return {"perplexity": round(math.exp(nll / tokens), 3), "bits_per_byte": round(nll / math.log(2) / nbytes, 4),
            "tokens": tokens, "bytes": nbytes}


def perplexity(args, model_dir: Path, donor_dir: Path) -> dict:
    from vadasm.eval.tasks import perplexity_texts

    texts = perplexity_texts("test")
    work = Path(args.work)
    arms = {"smollm2 (donor, reference)": (donor_dir, donor_dir),
            "gemma3-270m, own tokenizer (reference)": (model_dir, model_dir)}
    for name in [f"vadasm_{m}" for m in args.methods] + ([] if args.no_mergekit else ["mk_omp"]):
        arms[name] = (work / name, donor_dir)
    scores = {name: _perplexity(folder, tok, texts) for name, (folder, tok) in arms.items()}
    if not args.no_mergekit:  # how far each vadasm output is from mergekit's, row by row
        theirs = _embed(work / "mk_omp")
        for name in [f"vadasm_{m}" for m in args.methods]:
            ours = _embed(work / name)
            rel = (ours - theirs).norm(dim=1) / theirs.norm(dim=1).clamp_min(1e-12)
            scores[name]["rows_equal_to_mergekit"] = int((ours == theirs).all(1).sum())
            scores[name]["rows_within_1e-3_of_mergekit"] = int((rel < 1e-3).sum())
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["retrieval", "surgery", "perplexity", "all"], default="all")
    parser.add_argument("--heldout", type=int, default=2000)
    parser.add_argument("--omp-heldout", type=int, default=500)
    parser.add_argument("--parity", type=int, default=128)
    parser.add_argument("-k", "--k", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["lstsq", "procrustes", "omp"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/vadasm-tokensurgeon")
    parser.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-tokensurgeon")
    parser.add_argument("--mergekit-python", default="/tmp/mkvenv/bin/python")
    parser.add_argument("--no-mergekit", action="store_true")
    parser.add_argument("--out", default="results/tokensurgeon/results.json")
    args = parser.parse_args()
    if not all(is_built(a) for a in ("smollm2", "gemma3-270m")):
        raise SystemExit("testbed artefacts not built (run `vadasm testbed build --only smollm2 --only gemma3-270m`)")
    model_dir, donor_dir = artefact_dir("gemma3-270m"), artefact_dir("smollm2")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report["pair"] = {"model": "gemma3-270m (testbed)", "donor": "smollm2 (testbed)"}
    stages = {"retrieval": retrieval, "surgery": surgery, "perplexity": perplexity}
    for name, stage in stages.items():
        if args.stage in (name, "all"):
            started = time.perf_counter()
            report[name] = stage(args, model_dir, donor_dir)
            report[name + "_stage_seconds"] = round(time.perf_counter() - started, 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps({name: report[name]}, indent=2))


if __name__ == "__main__":
    main()

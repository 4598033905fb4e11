"""A randomised campaign of hostile inputs against `vadasm merge`, `blend` and `graft`, with counts.

    python benchmarks/fuzz.py --cases 300 --seed 0

Each case copies pristine tiny models (a Llama base and two fine-tunes; a LLaVA donor and a text
recipient of another vocabulary for the graft), damages one thing at random (a byte or field of a
safetensors header, a config value, a recipe value, a flag, where the output goes, or the file's
length), runs the command in this process and checks the promise (tests/fuzz_cases.py): a refusal
is exit 2 with one `error:` line, no traceback, no input changed, nothing left beside the output.
A run that succeeds on damaged input is also checked: the `safetensors` library must be able to read
every damaged weight file (otherwise vadasm accepted a file the reference reader refuses), and the
output must load in `transformers` with finite weights. Prints one count per outcome and the first
example of each problem; exits 1 if any promise was broken.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_cases import (  # noqa: E402
    Case,
    check_promise,
    copy_models,
    make_models,
    merge_argv,
    read_raw_safetensors,
    rewrite_config,
    run_cli,
    snapshot,
    weights_file,
    write_raw_safetensors,
)

ODD_VALUES = [-1, 0, 1, 2**40, 1e400, -1e-9, "x", "", None, True, [], [1], [1, 2, 3], {}, {"a": 1}, 0.5, "1e400",
              float("nan")]
CASE_TIMEOUT_S = 60
# Tiny models share few anchor tokens; these let the class C graft run at all (tests/graft uses the same).
GRAFT_FLAGS = ["--min-anchors", "10", "--heldout", "10", "--omp-k", "8", "--quiet"]


class Hang(Exception):
    pass


def damage_header(models: dict[str, Path], rng: random.Random) -> str:
    path = weights_file(models[rng.choice(["base", "ft1", "ft2"])])
    header, data = read_raw_safetensors(path)
    names = sorted(k for k in header if k != "__metadata__")
    kind = rng.choice(["field", "byte", "truncate", "drop", "extend"])
    if kind == "field":
        entry = header[rng.choice(names)]
        key = rng.choice(["dtype", "shape", "data_offsets"])
        entry[key] = rng.choice(ODD_VALUES + [["F32"], "I8", "BF16", [0, 1], [1, 0]])
        raw = json.dumps(header, allow_nan=True).encode()
    elif kind == "drop":
        header.pop(rng.choice(names))
        raw = json.dumps(header).encode()
    else:
        raw = json.dumps(header).encode()
    if kind == "byte":
        position = rng.randrange(len(raw))
        raw = raw[:position] + bytes([rng.randrange(256)]) + raw[position + 1:]
    if kind == "truncate":
        data = data[:rng.randrange(len(data))]
    if kind == "extend":
        data = data + bytes(rng.randrange(1, 64))
    write_raw_safetensors(path, raw, data)
    return f"header {kind} in {path.parent.name}"


def damage_config(models: dict[str, Path], rng: random.Random) -> str:
    model = models[rng.choice(["base", "ft1", "ft2"])]
    key = rng.choice(["num_hidden_layers", "hidden_size", "vocab_size", "intermediate_size", "num_attention_heads",
                      "num_key_value_heads", "model_type", "tie_word_embeddings", "architectures"])
    value = rng.choice(ODD_VALUES + ["llama", "mistral", "../x", "/etc/passwd"])
    rewrite_config(model, **{key: value})
    return f"config {key}={value!r} in {model.name}"


def damage_recipe(models: dict[str, Path], rng: random.Random, work: Path) -> tuple[str, list[str]]:
    method = rng.choice(["linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp"])
    recipe: dict = {"merge_method": method, "base_model": str(models["base"]),
                    "models": [{"model": str(models["ft1"]), "parameters": {"weight": 0.5, "density": 0.5}},
                               {"model": str(models["ft2"]), "parameters": {"weight": 0.5, "density": 0.5}}],
                    "parameters": {}}
    if method == "slerp":
        recipe["models"] = [{"model": str(models["base"])}, {"model": str(models["ft1"])}]
        recipe["parameters"] = {"t": 0.5}
    if method == "linear":
        for entry in recipe["models"]:
            entry["parameters"].pop("density")
    target = rng.choice(["global", "model", "top", "drop"])
    key = rng.choice(["weight", "density", "lambda", "normalize", "t", "rescale", "epsilon", "dtype", "seed"])
    value = rng.choice(ODD_VALUES)
    if target == "global":
        recipe["parameters"][key] = value
    elif target == "model":
        rng.choice(recipe["models"]).setdefault("parameters", {})[key] = value
    elif target == "top":
        recipe[rng.choice(["dtype", "out_dtype", "tokenizer_source", "seed", "merge_method", "base_model"])] = value
    else:
        recipe.pop(rng.choice(["merge_method", "models", "base_model"]))
    path = work / "recipe.yaml"
    path.write_text(json.dumps(recipe, allow_nan=True))  # JSON is YAML
    return f"recipe {target} {key}={value!r} ({method})", ["merge", str(path), str(work / "out"), "--quiet"]


def damage_flags(rng: random.Random) -> tuple[str, list[str]]:
    flag = rng.choice(["--shard-size", "--threads", "--device", "--density", "--weight", "--param", "--dtype",
                       "--seed"])
    value = rng.choice(["-5MB", "0", "-1", "big", "1e400", "nan", "cuda", "bogus", "cuda:7", "2", "float7",
                        "lambda=nan", "normalize=maybe", "t=5", "density=-1"])
    return f"flag {flag} {value}", [flag, value]


def build_case(models: dict[str, Path], rng: random.Random, work: Path) -> tuple[str, Case]:
    out = work / "out"
    inputs = [work / "in"]
    kind = rng.choice(["header", "header", "config", "recipe", "recipe", "flags", "output", "blend", "graft"])
    if kind == "header":
        return damage_header(models, rng), Case(merge_argv(models, out), inputs, out)
    if kind == "config":
        return damage_config(models, rng), Case(merge_argv(models, out), inputs, out)
    if kind == "recipe":
        label, argv = damage_recipe(models, rng, work)
        return label, Case(argv, inputs, out)
    if kind == "flags":
        label, extra = damage_flags(rng)
        return label, Case(merge_argv(models, out, *extra, method="ties"), inputs, out)
    if kind == "blend":
        label = damage_header(models, rng) if rng.random() < 0.5 else damage_config(models, rng)
        argv = ["blend", "--before", str(models["base"]), "--after", str(models["ft1"]), "--output", str(out),
                "--alphas", "0,0.5", "--quiet"]
        return "blend: " + label, Case(argv, inputs, out)
    if kind == "graft":
        pair = {"base": models["donor"], "ft1": models["recipient"], "ft2": models["recipient"]}
        label = damage_header(pair, rng) if rng.random() < 0.5 else damage_config(pair, rng)
        if rng.random() < 0.3:
            label, out = "output placement", rng.choice([models["recipient"], models["donor"] / "x", work / "in"])
        argv = ["graft", str(models["donor"]), str(models["recipient"]), str(out), *GRAFT_FLAGS,
                *(["--force"] if rng.random() < 0.5 else [])]
        return "graft: " + label, Case(argv, inputs, out)
    link = work / "link"
    link.symlink_to(models[rng.choice(["base", "ft1", "ft2"])])
    target = rng.choice([models["ft1"], link, work / "in", models["ft2"] / "sub", models["base"] / "x" / "y"])
    force = ["--force"] if rng.random() < 0.7 else []
    return f"output {target.name} {force}", Case(merge_argv(models, target, *force), inputs + [link], target)


def reference_reader_accepts(models: dict[str, Path], argv: list[str]) -> bool:
    """Does the `safetensors` library read every weight file of the (damaged) inputs the command read?"""
    from safetensors import safe_open

    try:
        for model in (m for m in models.values() if str(m) in argv):
            for path in model.glob("*.safetensors"):
                with safe_open(path, "pt") as handle:
                    for name in handle.keys():
                        handle.get_tensor(name)
    except Exception:  # noqa: BLE001 - any refusal by the reference reader
        return False
    return True


def make_pristine(folder: Path) -> dict[str, Path]:
    from pico_models import make_llava_donor, make_text_recipient

    words = [f"w{i}" for i in range(91)]
    recipient_words = words[15:] + [f"v{i}" for i in range(15)]  # 76 shared with the donor
    return {**make_models(folder), "donor": make_llava_donor(folder / "donor", "llama", words=words),
            "recipient": make_text_recipient(folder / "recipient", "qwen2", words=recipient_words)}


def output_is_sound(out: Path) -> str | None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    folders = sorted(out.glob("alpha_*")) or [out]
    for folder in folders:
        vision = "vision_config" in json.loads((folder / "config.json").read_text())
        try:
            model = (AutoModelForImageTextToText if vision else AutoModelForCausalLM).from_pretrained(folder)
        except Exception as err:  # noqa: BLE001
            return f"output {folder.name} does not load: {str(err).splitlines()[0][:150]}"
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            return f"output {folder.name} has NaN/Inf weights"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="vadasm-fuzz-"))
    pristine = make_pristine(root / "pristine")
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}

    def on_alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    started = time.perf_counter()
    for index in range(args.cases):
        work = root / f"case{index}"
        models = copy_models(pristine, work / "in")
        label, case = build_case(models, rng, work)
        before = snapshot(case.inputs)
        existed = case.output.exists() or case.output.is_symlink()
        signal.alarm(CASE_TIMEOUT_S)
        try:
            outcome = run_cli(case.argv)
        except Hang:
            counts["HANG"] += 1
            examples.setdefault("HANG", label)
            continue
        finally:
            signal.alarm(0)
        case.expect = "succeed" if outcome.code == 0 else "refuse"  # either is fine; each is checked
        outcome.problems = check_promise(case, before, outcome, existed)
        if outcome.code == 0:
            if not reference_reader_accepts(models, case.argv):
                outcome.problems.append("accepted a weight file that the safetensors library refuses")
            wrong = output_is_sound(case.output)
            if wrong:
                outcome.problems.append("silent wrong output: " + wrong)
        verdict = "refused cleanly" if outcome.code == 2 and not outcome.problems else (
            "succeeded, output sound" if outcome.code == 0 and not outcome.problems else "BROKEN")
        counts[verdict] += 1
        for problem in outcome.problems:
            cause = problem.split(":")[0]
            counts["problem: " + cause] += 1
            examples.setdefault(cause, f"{label} -> {problem[:200]}")
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    print(f"{args.cases} cases, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    for key, value in sorted(counts.items()):
        print(f"  {value:5d}  {key}")
    for cause, example in sorted(examples.items()):
        print(f"  first '{cause}': {example}")
    sys.exit(1 if counts["BROKEN"] or counts["HANG"] else 0)


if __name__ == "__main__":
    main()

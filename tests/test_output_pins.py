"""Pins the bytes of a small merge, graft and blend output (issue 16: refactors must not change them).

Each case builds seeded pico inputs, runs the command in-process from a fixed working directory with
relative paths (provenance records the paths as given), and compares the sha256 of every output file with
the value recorded before the refactor. The inputs' own hashes are pinned too: if another transformers
release initialises the pico models differently, the inputs differ and the case is skipped with that reason
(an output pin says nothing about other inputs). Blend pins only what is exact on every CPU: the alpha 1.0
folder (the after model bit for bit, plus config, tokenizer and provenance); its SVD-derived numbers in
other folders may differ in the last bit between processors' LAPACK kernels.

To re-record after an intended change: `VADASM_RECORD_PINS=1 pytest tests/test_output_pins.py -s` prints
the new table.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pico_models import make_llava_donor, make_text_recipient, perturbed_copy
from vadasm.cli import _register_subcommands, app

_register_subcommands()

WORDS = [f"w{i}" for i in range(91)]
RECORD = os.environ.get("VADASM_RECORD_PINS") == "1"

INPUT_PINS: dict[str, str] = {
    "blend": "a965dff218a44d9b35e5f552c2b2c9d88a7af4bcaac56a890b4440e5874ac633",
    "graft": "a779fc37fe7cbed74ed083bec789475da6e9e6b64346ff2c345d6df8aa5b0342",
    "merge": "225348cf8f04b37a7c734aaab91a879dc1c450c353c572143736e93383cc0e2d",
}
OUTPUT_PINS: dict[str, dict[str, str]] = {
    "blend": {
        "config.json": "0083eff176174b0d71b2939bc292f372ffef80bbf3c12373ed100f1f70f2ea96",
        "generation_config.json": "b3774c2596ef62cd2f3a08561715f3c8b423448d4f03f89fc62181c461218360",
        "model.safetensors": "65be5ef4d6cc26296e289021f4bcd1d64a2a4b4533986937742ff330fb86a4a7",
        "svd_blend_meta.json": "816df8d6099b2543533bf45a63cde3547ef90e4ef0c31a2af53920f0cd1050f8",
        "tokenizer.json": "c6a6c82d33883bc8be3b7f324af34496d2f389439ed44ab1bd01f7e58dae7f95",
        "tokenizer_config.json": "ad6dc6a5790d0f94170998ab79921c97d28ea54602abcdb33cba3132d13ac233",
        "vadasm_config.json": "0ab790dfb784c93b87148413d6a118cc6c432ed8c6e96809a00da66778a208d2",
    },
    "graft": {
        "chat_template.jinja": "4c803c5f6782453ddab65f19158623599b233c94971249f4a74bd24d73a1dc30",
        "config.json": "e4320f52c9ca0ca8134f08dfdb2554d0dce6a4084c74147d7b21948a3c389e9d",
        "generation_config.json": "b3774c2596ef62cd2f3a08561715f3c8b423448d4f03f89fc62181c461218360",
        "model.safetensors": "e299f8445779454d9880a63cfba48fd9371c1b0b6edd68ecd468a57f7877e966",
        "processor_config.json": "df66fa5c1260a0a2769b7c378bd7916a7456f747694a2ffcfcec07545377c504",
        "tokenizer.json": "77305e1c608f651131f5b6a5c4987ee78080ea0c10e4c9460c945c75989a76ee",
        "tokenizer_config.json": "01e4ce3e51ff1273939ddcec586cda7f80381c2eeb3799a8f2ede9544e91f63c",
        "vadasm_config.json": "fa7cb107bb41367ef3d162c5dc6d65dc01a46d29a103d78566b4d82d4dc44a20",
    },
    "merge": {
        "README.md": "7637b7e74cda17cc3f8f8db9a2dc019d1de7e95d26dcb3559967e31f07059ff5",
        "config.json": "6a7b1deeb775ee9e0bea99c67b50d8edcb23ba2846e8e15696f8f10e88c5bec4",
        "generation_config.json": "b3774c2596ef62cd2f3a08561715f3c8b423448d4f03f89fc62181c461218360",
        "mergekit_config.yml": "8407259e337c911ea560f352a9f7191bfe2e30c4e28a2b7fce33c4c42832aa21",
        "model.safetensors": "b8569b5ebf1586ed1fc163df9c1ad80c9045a98e533c33543df08daa3281c154",
        "tokenizer.json": "c6a6c82d33883bc8be3b7f324af34496d2f389439ed44ab1bd01f7e58dae7f95",
        "tokenizer_config.json": "ad6dc6a5790d0f94170998ab79921c97d28ea54602abcdb33cba3132d13ac233",
        "vadasm_config.json": "f622af5f05c4a08cda0ae3503632f347010a707610ba33e41c3f9ca9a8149969",
    },
}


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of each file, with the working directory's absolute path (some provenance records resolve
    the inputs' paths) replaced by a placeholder, so the pin holds in any temp folder."""
    workdir = str(Path.cwd()).encode()
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes().replace(workdir, b"<workdir>")).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def inputs_digest(*folders: Path) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for name, sha in folder_digest(folder).items():
            digest.update(f"{folder.name}/{name}:{sha}\n".encode())
    return digest.hexdigest()


def run(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def check(case: str, inputs: str, outputs: dict[str, str]) -> None:
    if RECORD:
        print(f"\nINPUT {case!r}: {inputs!r}\nOUTPUT {case!r}: {outputs!r}")
        return
    if INPUT_PINS[case] != inputs:
        pytest.skip(f"{case}: the pico inputs differ from the recorded ones (another transformers release?)")
    assert outputs == OUTPUT_PINS[case]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_merge_output_bytes_are_pinned(workdir):
    make_text_recipient(Path("base"), "llama", words=WORDS)
    perturbed_copy(Path("base"), Path("tuned_a"), seed=3)
    perturbed_copy(Path("base"), Path("tuned_b"), seed=4)
    Path("recipe.yml").write_text(
        "merge_method: ties\nbase_model: base\nmodels:\n"
        "  - model: tuned_a\n    parameters: {weight: 0.6, density: 0.5}\n"
        "  - model: tuned_b\n    parameters: {weight: 0.4, density: 0.7}\n"
        "dtype: bfloat16\n"
    )
    run("merge", "recipe.yml", "out")
    check("merge", inputs_digest(Path("base"), Path("tuned_a"), Path("tuned_b")), folder_digest(Path("out")))


def test_graft_output_bytes_are_pinned(workdir):
    base = make_text_recipient(Path("base"), "llama", words=WORDS + ["<image>"], num_hidden_layers=5)
    recipient = perturbed_copy(base, Path("recipient"), seed=3)
    for f in base.glob("tok*"):
        (recipient / f.name).write_bytes(f.read_bytes())
    make_llava_donor(Path("donor"), "llama", words=WORDS, text_folder=base, lm_noise=0.01)
    run("graft", "donor", "recipient", "out", "--base", "base", "--beta", "0.5")
    check("graft", inputs_digest(Path("base"), Path("recipient"), Path("donor")), folder_digest(Path("out")))


def test_blend_output_bytes_are_pinned(workdir):
    make_text_recipient(Path("before"), "llama", words=WORDS)
    perturbed_copy(Path("before"), Path("after"), seed=5)
    for f in Path("before").glob("tok*"):
        (Path("after") / f.name).write_bytes(f.read_bytes())
    run("blend", "--before", "before", "--after", "after", "--output", "out", "--alphas", "0.5,1.0")
    check("blend", inputs_digest(Path("before"), Path("after")), folder_digest(Path("out/alpha_1.0")))

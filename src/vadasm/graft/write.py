"""Stage 4, the write: config.json and processor (or the text model's sidecars), and the provenance record
(vadasm_config.json, through io/provenance's one schema), into the temporary output folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vadasm.graft.options import GraftOptions
from vadasm.graft.pairing import TextView, load_processor
from vadasm.graft.result import GraftResult
from vadasm.graft.tokens import ImageTokenChoice, vision_chat_template
from vadasm.io import Checkpoint, InputWatch, PlannedTensor
from vadasm.io.provenance import PROVENANCE_FILE, provenance_record, set_plan_dtype, write_provenance


def write_graft_provenance(out: Path, opts: GraftOptions, result: GraftResult, watch: InputWatch,
                           roles: dict[str, Checkpoint | None]) -> None:
    """vadasm_config.json. Nothing that varies run to run (wall-clock seconds, the output path): two grafts
    of the same inputs give byte-identical folders. The seconds are returned and printed only."""
    write_provenance(out, provenance_record(
        "graft",
        recipe=opts.recipe(),
        inputs={role: {"path": str(ck.path), "fingerprint": watch.fingerprint(ck)} for role, ck in roles.items() if ck},
        result={k: v for k, v in result.to_dict().items() if k not in ("output", "seconds")},
        scores={},
    ))


def record_scores(output: str | Path, scores: dict) -> None:
    """Add measured scores to an output's vadasm_config.json (written after evaluation)."""
    provenance = json.loads((Path(output) / PROVENANCE_FILE).read_text())
    provenance["scores"] = scores
    write_provenance(output, provenance)


def write_text_sidecars(out: Path, recipient: Checkpoint, plan: list[PlannedTensor]) -> None:
    """The text-only output: the recipient's sidecars and config (with the written dtype)."""
    for file in recipient.sidecar_files():
        shutil.copy2(file, out / file.name)
    config = dict(recipient.config)
    set_plan_dtype(config, plan)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_vision_sidecars(out: Path, vision_ck: Checkpoint, recipient_ck: Checkpoint, r_text: TextView, r_tok,
                          image_token: ImageTokenChoice | None, rows: int, projector: dict,
                          plan: list[PlannedTensor], keep_recipient_vision: bool) -> None:
    """config.json (vision source's, with the recipient's text_config) and the processor."""
    config = {k: v for k, v in vision_ck.config.items() if k != "transformers_version"}
    text_config = dict(recipient_ck.config.get("text_config") or recipient_ck.config)
    text_config.pop("transformers_version", None)
    key = r_text.arch.text.spec["config"]["vocab_size"]
    text_config[key if isinstance(key, str) else key[0]] = rows
    text_config["tie_word_embeddings"] = r_text.tied
    config["text_config"] = text_config
    config["tie_word_embeddings"] = r_text.tied
    config["multimodal_projector_bias"] = "linear_1.bias" in projector
    for field_name in ("image_token_index", "image_token_id"):
        if image_token and (field_name in config or field_name == "image_token_index"):
            config[field_name] = image_token.token_id
    set_plan_dtype(config, plan)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = recipient_ck.path / "generation_config.json"
    if generation.is_file():
        shutil.copy2(generation, out / generation.name)
    if keep_recipient_vision:
        for file in vision_ck.sidecar_files():
            if file.name != "generation_config.json":
                shutil.copy2(file, out / file.name)
        return
    donor_processor = load_processor(vision_ck.path)
    processor = type(donor_processor)(
        image_processor=donor_processor.image_processor,
        tokenizer=r_tok,
        patch_size=donor_processor.patch_size,
        vision_feature_select_strategy=donor_processor.vision_feature_select_strategy,
        chat_template=vision_chat_template(getattr(r_tok, "chat_template", None), image_token.token),
        image_token=image_token.token,
        num_additional_image_tokens=donor_processor.num_additional_image_tokens,
    )
    processor.save_pretrained(out)

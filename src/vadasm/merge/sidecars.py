"""What a merge's output folder gets besides the weights: tokenizer, chat template, config, recipe.

The tokenizer is copied from the base (or `tokenizer_source`'s model) when no vocabulary is
built; with `tokenizer_source`/`tokenizer:` it is the built one (vadasm.merge.tokenizer), saved
by transformers. `chat_template:` is written as transformers expects (chat_template.jinja beside
tokenizer_config.json). `mergekit_config.yml` is the recipe as run, loadable by mergekit.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from importlib import resources
from pathlib import Path

import yaml

from vadasm.arch import Architecture
from vadasm.errors import VadasmError
from vadasm.io import Checkpoint, PlannedTensor
from vadasm.io.provenance import set_plan_dtype
from vadasm.merge.plan import is_vocabulary_tensor
from vadasm.merge.recipe import MergeConfig
from vadasm.merge.slices import LayerSlice, text_config_of
from vadasm.merge.tokenizer import Vocabulary, build_vocabulary, load_tokenizer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def tokenizer_source(recipe: MergeConfig) -> str | None:
    return recipe.tokenizer.source if recipe.tokenizer else recipe.tokenizer_source


def prepare_vocabulary(recipe: MergeConfig, checkpoints: dict[str, Checkpoint], arch: Architecture,
                       slices: list[LayerSlice]) -> Vocabulary | None:
    """The output vocabulary when the recipe asks for one (tokenizer_source / tokenizer:), else None."""
    source = tokenizer_source(recipe)
    if source is None:
        return None
    models = recipe.referenced_models()
    rows = {ref: _embedding_rows(ck, arch) for ref, ck in checkpoints.items()}
    tokens = recipe.tokenizer.tokens if recipe.tokenizer else None
    pad = recipe.tokenizer.pad_to_multiple_of if recipe.tokenizer else None
    vocabulary = build_vocabulary(source, recipe.base_model or models[0], models,
                                  {ref: ck.path for ref, ck in checkpoints.items()}, rows, tokens, pad)
    for end in {0, len(slices) - 1}:  # the slices whose sources make the vocabulary tensors
        gathered = {s.model for s in slices[end].sources}
        for token, spec in (tokens or {}).items():
            model = spec.source_model()
            if model is not None and model not in gathered:
                raise VadasmError(f"recipe: tokenizer.tokens[{token!r}].source: {model} is not merged into the "
                                  "embeddings / LM head (not a source of the first or last slice)")
    return vocabulary


def _embedding_rows(checkpoint: Checkpoint, arch: Architecture) -> int:
    for name in checkpoint.keys():
        if is_vocabulary_tensor(arch, name) and len(checkpoint.shape(name)) == 2:
            return checkpoint.shape(name)[0]
    raise VadasmError(f"{checkpoint.path}: no token embedding tensor found")


def _donor(recipe: MergeConfig, checkpoints: dict[str, Checkpoint], reference: Checkpoint) -> Checkpoint:
    """Whose tokenizer files are copied when no vocabulary is built."""
    source = tokenizer_source(recipe)
    return reference if source in (None, "base", "union") else checkpoints[source]


def prepare_chat_template(recipe: MergeConfig, checkpoints: dict[str, Checkpoint], reference: Checkpoint,
                          vocabulary: Vocabulary | None) -> str | None:
    """The template text to write, checked before any weight is merged."""
    if not recipe.chat_template:
        return None
    template = chat_template_text(recipe.chat_template, [ck.path for ck in checkpoints.values()])
    donor = _donor(recipe, checkpoints, reference)
    if template is not None and vocabulary is None:
        load_tokenizer(donor.path)  # one line if there is no tokenizer to attach the template to
    return template


def write_tokenizer(out: Path, recipe: MergeConfig, checkpoints: dict[str, Checkpoint], reference: Checkpoint,
                    vocabulary: Vocabulary | None, template: str | None) -> None:
    """Tokenizer and processor files, then the chat template if the recipe sets one."""
    donor = _donor(recipe, checkpoints, reference)
    for file in reference.sidecar_files() if vocabulary else donor.sidecar_files():
        if vocabulary is None or file.name not in TOKENIZER_FILES:
            shutil.copy2(file, out / file.name)
    tokenizer = vocabulary.tokenizer if vocabulary else None
    if template is not None:
        tokenizer = tokenizer or load_tokenizer(out)
        tokenizer.chat_template = template
    if tokenizer is not None:
        for name in TOKENIZER_FILES:  # nothing of the copied tokenizer may outlive the saved one
            (out / name).unlink(missing_ok=True)
        tokenizer.save_pretrained(out)


def chat_template_names() -> list[str]:
    folder = resources.files("vadasm.merge").joinpath("chat_templates")
    return sorted(p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja"))


def chat_template_text(setting: str, model_paths: list[Path]) -> str | None:
    """mergekit's rule: `auto` = the most common template among the inputs (None if none has one);
    a template name; else the text itself, which must look like a Jinja template."""
    if setting == "auto":
        templates = [t for t in (_model_template(p) for p in model_paths) if t]
        return Counter(templates).most_common(1)[0][0] if templates else None
    if setting in chat_template_names():
        return resources.files("vadasm.merge").joinpath("chat_templates", f"{setting}.jinja").read_text()
    if len(setting) < 20 or "{" not in setting:
        raise VadasmError(f"recipe: chat_template {setting!r} is neither 'auto', a template name "
                          f"({', '.join(chat_template_names())}) nor a Jinja template")
    return setting


def _model_template(path: Path) -> str | None:
    """A model folder's chat template, as transformers would load it."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text().strip()
    for name, key in (("chat_template.json", "chat_template"), ("tokenizer_config.json", "chat_template")):
        file = path / name
        if file.is_file():
            try:
                template = json.loads(file.read_text()).get(key)
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(template, list):  # named templates: mergekit takes "default"
                template = next((t.get("template") for t in template if t.get("name") == "default"), None)
            if isinstance(template, str) and template.strip():
                return template.strip()
    return None


def write_config(out: Path, config: dict, plan: list[PlannedTensor], arch: Architecture,
                 vocabulary: Vocabulary | None) -> None:
    """config.json, with the dtype the weights were written in and the output vocabulary's size."""
    if vocabulary is not None:
        text_config = text_config_of(config, arch)
        names = arch.text.spec["config"].get("vocab_size") or "vocab_size"
        names = [names] if isinstance(names, str) else list(names)
        for name in [n for n in names if n in text_config] or names[:1]:
            text_config[name] = vocabulary.rows
    set_plan_dtype(config, plan)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class _FlowListDumper(yaml.SafeDumper):
    """Lists of numbers on one line (`layer_range: [0, 4]`), as mergekit writes them."""


_FlowListDumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data,
    flow_style=all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in data)))


def write_mergekit_config(out: Path, recipe: MergeConfig) -> None:
    """mergekit_config.yml: the recipe as run (vadasm-only keys left out when at their defaults)."""
    text = yaml.dump(recipe.model_dump(mode="json", exclude_defaults=True), Dumper=_FlowListDumper,
                     sort_keys=False)
    (out / "mergekit_config.yml").write_text(text)


def card_license(folder: Path) -> str | None:
    """The `license` of a model folder's README.md front matter (Hugging Face model card), if any."""
    card = folder / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    try:
        front = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return None
    value = front.get("license") if isinstance(front, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def input_record(ref: str, checkpoint: Checkpoint, fingerprint: str) -> dict:
    """Provenance of one input; `name_or_path` and `license` let the card name Hub ids and a licence."""
    record = {"ref": ref, "path": str(checkpoint.path), "fingerprint": fingerprint}
    if isinstance(checkpoint.config.get("_name_or_path"), str):
        record["name_or_path"] = checkpoint.config["_name_or_path"]
    license_ = card_license(checkpoint.path)
    if license_:
        record["license"] = license_
    return record

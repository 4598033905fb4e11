"""Staged recipes (mergekit-multi): several `---`-separated merges in one file, later ones using earlier outputs.

```yaml
name: first-merge          # a name makes the document an intermediate merge
merge_method: linear
models: [{model: a}, {model: b}]
---
merge_method: slerp        # the one unnamed document is the final merge, written to OUTPUT_DIR
base_model: first-merge    # an earlier document's name is a model reference (also `name+lora`)
models: [{model: c}]
parameters: {t: 0.5}
```

As mergekit-multi (`mergekit/scripts/multimerge.py`): documents run in dependency order, whatever
their order in the file; names are unique, at most one document is unnamed. Without an unnamed
document, the one document no other uses is the final one. Intermediate outputs go to
`--intermediate-dir`/NAME when given (kept, like mergekit's), else to a temporary folder beside the
output that is removed at the end, and then a document the final merge does not use is skipped
(nothing would keep its output). Every document is validated, every name resolved and every
output checked before the first merge starts, so a bad file writes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vadasm.errors import VadasmError
from vadasm.io import check_output_free
from vadasm.merge.lora import split_reference
from vadasm.merge.recipe import MergeConfig, recipe_from_dict
from vadasm.merge.recipe_yaml import RecipeYamlError, load_yaml_file_documents
from vadasm.merge.run import MergeOptions, MergeResult, run_merge

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_KEYWORDS = {"union", "base"}  # tokenizer sources that are not models
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass
class Stage:
    """One document of a staged recipe: its name (None for the unnamed final one) and its recipe."""

    name: str | None
    document: int  # 1-based position in the file, for messages
    recipe: MergeConfig
    uses: list[str] = field(default_factory=list)  # names of the stages it reads

    @property
    def label(self) -> str:
        return f"document {self.document}" + (f" ('{self.name}')" if self.name else "")


@dataclass
class MultiResult:
    output: str
    stages: list[dict]  # per merge run: name, output (None: a temporary folder, removed), its MergeResult
    skipped: list[str] = field(default_factory=list)  # named documents the final merge does not use

    def to_dict(self) -> dict:
        return asdict(self)


def read_recipe_documents(path: str | Path) -> list[dict]:
    """The recipe file's documents as mappings (empty documents, e.g. after a trailing `---`, dropped)."""
    path = Path(path)
    if not path.is_file():
        raise VadasmError(f"{path}: recipe file not found")
    try:
        documents = [d for d in load_yaml_file_documents(path) if d is not None]
    except RecipeYamlError as err:
        raise VadasmError(f"{path}: {err}") from None
    for i, document in enumerate(documents, 1):
        if not isinstance(document, dict) and len(documents) > 1:
            raise VadasmError(f"{path}: document {i} is not a YAML mapping; each recipe has at least "
                              "'merge_method' and 'models'")
    if not documents or not isinstance(documents[0], dict):
        raise VadasmError(f"{path}: a recipe is a YAML mapping with at least 'merge_method' and 'models'")
    return documents


def plan_stages(documents: list[dict], source: str = "recipe") -> list[Stage]:
    """Validate every document and order them so each runs after the merges it uses; the final one last."""
    stages: list[Stage] = []
    for i, raw in enumerate(documents, 1):
        raw = dict(raw)
        name = raw.pop("name", None)
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name) or name in _KEYWORDS):
            raise VadasmError(f"{source}: document {i}: name {name!r} is not usable as a folder name (letters, "
                              "digits, '_', '.', '-'; not 'union' or 'base')")
        stages.append(Stage(name, i, recipe_from_dict(raw, source=f"{source}: document {i}")))
    by_name: dict[str, Stage] = {}
    for stage in stages:
        if stage.name in by_name:
            raise VadasmError(f"{source}: documents {by_name[stage.name].document} and {stage.document} are both "
                              f"named '{stage.name}'; names must be unique")
        if stage.name is not None:
            by_name[stage.name] = stage
    unnamed = [s for s in stages if s.name is None]
    if len(unnamed) > 1:
        raise VadasmError(f"{source}: documents {unnamed[0].document} and {unnamed[1].document} have no name; "
                          "only the final merge may be unnamed")
    for stage in stages:
        for ref in stage.recipe.referenced_models():
            model = _model_part(ref)
            if model in by_name:
                if model not in stage.uses:
                    stage.uses.append(model)
            elif not _exists_or_hub_id(model):
                known = ", ".join(sorted(by_name)) or "none"
                raise VadasmError(f"{source}: {stage.label}: '{model}' is neither a document name ({known}) nor a "
                                  "model folder")
    final = unnamed[0] if unnamed else _only_unused(stages, source)
    order = _dependency_order(stages, by_name, source)
    order.remove(final)
    return order + [final]


def run_multi_merge(stages: list[Stage], output: str | Path, options: MergeOptions | None = None,
                    intermediate_dir: str | Path | None = None) -> MultiResult:
    """Run each stage into its folder (the final one into `output`); intermediate outputs are kept only
    under `intermediate_dir`, else removed at the end. Any failure leaves `output` unwritten."""
    options = options or MergeOptions()
    output = Path(output)
    final = stages[-1]
    keep = intermediate_dir is not None
    root = Path(intermediate_dir) if keep else output.parent / f".{output.name}.vadasm-stages-{os.getpid()}"
    needed = _needed_by(final, {s.name: s for s in stages if s.name})
    todo = [s for s in stages[:-1] if keep or s.name in needed]
    skipped = [s.name for s in stages[:-1] if s not in todo]
    if keep and _overlaps(output, root, [str(s.name) for s in todo]):
        raise VadasmError(f"{output}: the output folder is, holds or is a stage of --intermediate-dir {root}; "
                          "choose another (nothing written)")
    recipes = {id(s): _with_paths(s, root) for s in todo + [final]}
    outputs = {id(s): root / str(s.name) for s in todo}
    outputs[id(final)] = output
    for stage in (todo if keep else []) + [final]:  # before any work: outputs free, no input overwritten
        inputs = [p for ref in recipes[id(stage)].referenced_models() for p in split_reference(ref) if p]
        check_output_free(outputs[id(stage)], options.force, inputs)
    _remove_dead_stage_folders(output)
    results: list[dict] = []
    try:
        for stage in todo + [final]:
            root.mkdir(parents=True, exist_ok=True)
            result: MergeResult = run_merge(recipes[id(stage)], outputs[id(stage)], options)
            kept = keep or stage is final  # else in the temporary folder, removed below
            results.append({"name": stage.name, "document": stage.document,
                            "output": str(outputs[id(stage)]) if kept else None, "result": result.to_dict()})
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return MultiResult(str(output), results, skipped)


def _remove_dead_stage_folders(output: Path) -> None:
    """Temporary stage folders beside `output` left by killed runs (their pid gone) are removed."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.vadasm-stages-(\d+)")
    for entry in output.parent.iterdir() if output.parent.is_dir() else []:
        found = pattern.fullmatch(entry.name)
        if found and entry.is_dir() and not entry.is_symlink() and not _alive(int(found[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _overlaps(output: Path, root: Path, names: list[str]) -> bool:
    """Would the final output be written where an intermediate merge lives (or over their folder)?"""
    out, stages = output.resolve(), root.resolve()
    return out == stages or out in stages.parents or any(out == stages / name for name in names)


def _model_part(ref: str) -> str:
    model, _ = split_reference(ref)
    return model


def _exists_or_hub_id(model: str) -> bool:
    """A model the merge itself can find: an existing path, or a Hub id it may fetch."""
    return Path(model).expanduser().exists() or (_HUB_ID.fullmatch(model) is not None
                                                 and not model.startswith((".", "/", "~")))


def _only_unused(stages: list[Stage], source: str) -> Stage:
    """With every document named, the final one is the one no other document uses."""
    used = {name for s in stages for name in s.uses}
    unused = [s for s in stages if s.name not in used]
    if len(unused) != 1:
        names = ", ".join(f"'{s.name}'" for s in unused) or "none"
        raise VadasmError(f"{source}: cannot tell the final merge: documents used by no other are {names}; "
                          "leave the final document's name out")
    return unused[0]


def _dependency_order(stages: list[Stage], by_name: dict[str, Stage], source: str) -> list[Stage]:
    """Depth-first topological order (file order among independent documents); a cycle is one line."""
    order: list[Stage] = []
    state: dict[int, str] = {}

    def visit(stage: Stage, path: list[str]) -> None:
        if state.get(stage.document) == "done":
            return
        if state.get(stage.document) == "visiting":
            cycle = path[path.index(str(stage.name)):] + [str(stage.name)]
            raise VadasmError(f"{source}: the documents use each other in a cycle: {' -> '.join(cycle)}")
        state[stage.document] = "visiting"
        for name in stage.uses:
            visit(by_name[name], path + [str(stage.name)])
        state[stage.document] = "done"
        order.append(stage)

    for stage in stages:
        visit(stage, [])
    return order


def _needed_by(final: Stage, by_name: dict[str, Stage]) -> set[str]:
    needed: set[str] = set()
    pending = list(final.uses)
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending += by_name[name].uses
    return needed


def _with_paths(stage: Stage, root: Path) -> MergeConfig:
    """The stage's recipe with every reference to another stage replaced by that stage's output folder."""
    if not stage.uses:
        return stage.recipe

    def swap(ref: Any) -> Any:
        if not isinstance(ref, str) or ref in _KEYWORDS:
            return ref
        model, adapter = split_reference(ref)
        if model not in stage.uses:
            return ref
        path = str((root / model).absolute())
        return f"{path}+{adapter}" if adapter else path

    raw = stage.recipe.model_dump(exclude_none=True)
    for key in ("base_model", "tokenizer_source"):
        if key in raw:
            raw[key] = swap(raw[key])
    for entry in raw.get("models", []):
        entry["model"] = swap(entry["model"])
    for piece in raw.get("slices", []):
        if "base_model" in piece:
            piece["base_model"] = swap(piece["base_model"])
        for src in piece["sources"]:
            src["model"] = swap(src["model"])
    tokenizer = raw.get("tokenizer")
    if tokenizer:
        tokenizer["source"] = swap(tokenizer["source"])
        for spec in (tokenizer.get("tokens") or {}).values():
            if isinstance(spec.get("source"), dict) and "model" in spec["source"]:
                spec["source"]["model"] = swap(spec["source"]["model"])
            else:
                spec["source"] = swap(spec.get("source"))
    return recipe_from_dict(raw, source=f"{stage.label}")

"""Builders of the opt-in testbed artefacts (issue 15), built only when named with `--only`.

`clip-tower` (CLIP-style tower), `llava-smollm2-real` / `llava-gemma3-real` (LLaVA-1.5's two stages on
that tower) and `smollm2-reader` (the class C recipient) keep their recipes beside their code
(`clip_tower.py`, `llava_stages.py`, `reader.py`); here each becomes a `(out_dir, BuildOptions) ->
BuildRecord` builder for `build.BUILDERS`, with the build's seed, its criteria switch, and
`BuildOptions.opt_in_steps` (smoke builds) capping every step budget. They are slow, hence opt-in:
measured on 2 shared cores with one thread (results/testbed/llava-smollm2-real.md), clip-tower took
41 min (1,500 steps), llava-smollm2-real's feature alignment 30 min (400 steps) and its instruction
tuning more than 45 min (over 430 steps at ~4.5 s/step, plus ~2-3 min per validation check).
Heavy modules are imported only when a builder runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vadasm.testbed import scores
from vadasm.testbed.paths import artefact_dir
from vadasm.testbed.record import BuildRecord
from vadasm.testbed.rounds import fitted

if TYPE_CHECKING:
    from vadasm.testbed.build import BuildOptions

OPT_IN_DEPENDS = {
    "clip-tower": (),
    "llava-smollm2-real": ("smollm2", "clip-tower"),
    "llava-gemma3-real": ("gemma3-270m", "clip-tower"),
    "smollm2-reader": ("smollm2",),
}
REAL_BASE = {"llava-smollm2-real": "smollm2", "llava-gemma3-real": "gemma3-270m"}
CLIP_BUDGETS, CLIP_FLOORS = ("max_steps", "round_steps", "eval_every"), ("min_val_color", "min_val_shape")
STAGE_BUDGETS = ("align_max_steps", "align_eval_every", "tune_max_steps", "tune_eval_every")
STAGE_FLOORS = ("align_min_val", "tune_min_val", "tune_min_val_what")

def training_record(criterion: str, enabled: bool, steps_used: int, budget_steps: int) -> dict:
    """What `vadasm testbed status` prints for a trained stage (its trainer raised if the criterion failed)."""
    return {"criterion": criterion if enabled else f"none ({criterion})", "met": True,
            "steps_used": steps_used, "budget_steps": budget_steps}


def build_clip_tower_artefact(out: Path, options: BuildOptions) -> BuildRecord:
    from vadasm.testbed.clip_tower import ClipTowerRecipe
    from vadasm.testbed.real_donor import build_clip_tower

    recipe = fitted(ClipTowerRecipe(), options, CLIP_BUDGETS, CLIP_FLOORS)
    return BuildRecord(artefact="clip-tower", **build_clip_tower(out, recipe))


def real_donor_builder(name: str) -> Callable[[Path, BuildOptions], BuildRecord]:
    def run(out: Path, options: BuildOptions) -> BuildRecord:
        from vadasm.testbed.llava_stages import StagesRecipe
        from vadasm.testbed.real_donor import build_real_donor

        base = REAL_BASE[name]
        recipe = fitted(StagesRecipe(), options, STAGE_BUDGETS, STAGE_FLOORS)
        fields = build_real_donor(out, artefact_dir(base), artefact_dir("clip-tower"), base, recipe)
        stages = fields["scores"]["training"]
        fields["scores"] |= scores.held_out_scores(out, "easyvqa", options, limit=options.eval_vqa_items)
        criterion = (f"feature alignment: val caption words >= {100 * recipe.align_min_val:.0f}%; instruction "
                     f"tuning: val questions >= {100 * recipe.tune_min_val:.0f}% overall, what-colour/shape >= "
                     f"{100 * recipe.tune_min_val_what:.0f}%")
        return BuildRecord(artefact=name, **fields, training=training_record(
            criterion, options.criteria, stages["align_steps"] + stages["tune_steps"],
            recipe.align_max_steps + recipe.tune_max_steps))

    return run


def build_reader_artefact(out: Path, options: BuildOptions) -> BuildRecord:
    from vadasm.testbed.reader import build_reader

    return build_reader(out, options)


OPT_IN_BUILDERS: dict[str, Callable[[Path, BuildOptions], BuildRecord]] = {
    "clip-tower": build_clip_tower_artefact,
    "llava-smollm2-real": real_donor_builder("llava-smollm2-real"),
    "llava-gemma3-real": real_donor_builder("llava-gemma3-real"),
    "smollm2-reader": build_reader_artefact,
}

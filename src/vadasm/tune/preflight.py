"""Before the first candidate: every searched choice must be one the operation accepts.

A search over `merge_method=ties,della` (or a graft's `map_method`) would otherwise fail at the
first trial that draws a bad value, after the references were already scored. The methods a merge
search may name are exactly the registry's (`vadasm methods`), because each candidate recipe is
validated as `vadasm merge` validates it; a graft search accepts what `vadasm graft` accepts. Each
choice is tried with the other parameters at their defaults. Ranges are left to the trials: an open
end (density 0) is a valid search bound that some optimizers never draw.
"""

from __future__ import annotations

from typing import Any

from vadasm.errors import VadasmError
from vadasm.tune.objective import GraftBuilder, MergeBuilder, substitute
from vadasm.tune.space import SearchSpace


def choice_points(space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """(what is tried, parameters): the defaults, then each other choice of each choice parameter."""
    defaults = space.defaults()
    points = [("the defaults", defaults)]
    for param in space.params:
        if param.kind == "choice":
            points += [(f"{param.name}={choice}", {**defaults, param.name: choice})
                       for choice in param.choices if choice != defaults[param.name]]
    return points


def check_candidate(builder: MergeBuilder | GraftBuilder, params: dict[str, Any]) -> None:
    """Validate one candidate as its build would, without building it (VadasmError if refused)."""
    if isinstance(builder, MergeBuilder):
        from vadasm.merge import recipe_from_dict

        recipe_from_dict(substitute(builder.template, params), source="tuning recipe")
    elif isinstance(builder, GraftBuilder):
        from vadasm.graft.options import GraftOptions, check_options

        check_options(GraftOptions.flat(**{**builder.fixed, **params}))


def check_choices(builder: MergeBuilder | GraftBuilder, space: SearchSpace) -> None:
    """Refuse a search whose defaults or any choice the operation would refuse, naming the value."""
    for what, params in choice_points(space):
        try:
            check_candidate(builder, params)
        except VadasmError as err:
            raise VadasmError(f"--param {what}: {err}") from None

"""Hungarian weight matching: permute one model's MLP neurons and attention heads to match another's."""

from vadasm.align.hungarian import grouped_head_alignment, hungarian_neuron_alignment, unit_index
from vadasm.align.layout import Slot, UnitGroup, unit_groups
from vadasm.align.model import (
    SIMILARITIES,
    Alignment,
    AlignmentReport,
    GroupReport,
    compute_alignment,
    group_indices,
    permute_tensor,
    random_alignment,
)
from vadasm.align.run import align_checkpoints, write_aligned, write_permuted

__all__ = [
    "grouped_head_alignment", "hungarian_neuron_alignment", "unit_index", "Slot", "UnitGroup", "unit_groups",
    "SIMILARITIES", "Alignment", "AlignmentReport", "GroupReport", "compute_alignment", "group_indices",
    "permute_tensor", "random_alignment", "align_checkpoints", "write_aligned", "write_permuted",
]

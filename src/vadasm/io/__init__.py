"""Checkpoint I/O: lazy reading, streaming sharded writing, atomic output folders."""

from vadasm.io.checkpoint import SIDECAR_FILES, Checkpoint, read_config, resolve_model_path
from vadasm.io.output import InputWatch, atomic_output_dir, check_output_free
from vadasm.io.writer import DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, parse_dtype, parse_size

__all__ = [
    "SIDECAR_FILES", "Checkpoint", "read_config", "resolve_model_path", "atomic_output_dir",
    "check_output_free", "InputWatch", "DEFAULT_SHARD_SIZE", "PlannedTensor", "ShardedWriter", "parse_dtype",
    "parse_size",
]

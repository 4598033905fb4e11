"""User-facing errors.

Anything a user can cause (a missing folder, a corrupt shard, a shape mismatch) raises
`VadasmError` with one line naming the file and the problem; the CLI prints it and exits 2.
Everything else is a bug and keeps its traceback.
"""


def one_line(text: str, limit: int = 300) -> str:
    """`text` folded onto one line and cut to `limit` characters, however large the values it quotes."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class VadasmError(Exception):
    """A problem with the user's inputs or environment, reported as one clear line."""


class MissingExtraError(VadasmError):
    """An optional dependency is needed for this feature but is not installed."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'vadasm[{extra}]'"
        )

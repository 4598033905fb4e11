"""`VADASMMerger`, the seed's entry point, as a thin class over `graft`."""

from __future__ import annotations

from pathlib import Path

from vadasm.graft.options import GraftOptions
from vadasm.graft.result import GraftResult
from vadasm.graft.run import graft


class VADASMMerger:
    """`VADASMMerger(base=..., beta=...).merge(small, large, output)`: graft the large (donor)
    vision-language model onto the small (recipient) one; `vision=False` gives the text-only merge.
    Keyword arguments are `GraftOptions` fields, by flat name."""

    def __init__(self, options: GraftOptions | None = None, **overrides):
        self.options = (options or GraftOptions()).replaced(**overrides)

    def merge(self, small: str | Path, large: str | Path, output: str | Path, vision: bool = True) -> GraftResult:
        return graft(large, small, output, self.options.replaced(text_only=not vision))

"""Where the testbed lives on disk.

`VADASM_HOME` (default `~/.cache/vadasm`) holds `testbed/<artefact>/` folders. Tests and other
modules ask for artefacts by name here, so the layout is defined in one place.
"""

from __future__ import annotations

from pathlib import Path

from vadasm.paths import vadasm_home

ARTEFACTS = (
    "smollm2",
    "gemma3-270m",
    "vision-tower",
    "llava-smollm2",
    "smollm2-arith",
    "llava-gemma3",
    "clip-tower",
    "llava-smollm2-real",
    "llava-gemma3-real",
    "smollm2-reader",
)  # also the build order: the SmolLM2 scenario (class A) first, the opt-in artefacts last
# Built only when named (`vadasm testbed build --only NAME`): slow, and not yet shown to meet their criteria.
OPT_IN = ("clip-tower", "llava-smollm2-real", "llava-gemma3-real", "smollm2-reader")


def testbed_home() -> Path:
    return vadasm_home() / "testbed"


def artefact_dir(name: str) -> Path:
    """Folder of one testbed artefact (it may not be built yet)."""
    if name not in ARTEFACTS:
        raise KeyError(f"unknown testbed artefact {name!r}; known: {', '.join(ARTEFACTS)}")
    return testbed_home() / name


def is_built(name: str) -> bool:
    """An artefact is built once its provenance file exists (written last, after the rename)."""
    return (artefact_dir(name) / "vadasm_testbed.json").is_file()

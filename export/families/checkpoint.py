"""Reading checkpoint folders saved with ``save_pretrained`` (or in a published layout), and hub ids.

Tensors are read by an explicit key map: ``(checkpoint prefix, module prefix)`` pairs, first match
wins, unmatched names are skipped; ``load_state`` refuses a checkpoint that misses tensors.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgetrim.runtime.errors import UserError

KeyMap = tuple[tuple[str, str], ...]
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Source:
    """Where a model came from, as the manifest's ``source`` reports it."""

    kind: str  # preset | folder | hub
    name: str  # preset name, absolute folder path or hub id
    architecture: str
    random_weights: bool
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.safetensors.index.json", "*.txt", "*.model"]


def is_hub_id(spec: str) -> bool:
    return bool(HUB_ID.match(spec)) and not spec.startswith((".", "/", "~"))


def download_from_hub(repo_id: str) -> Path:
    """Snapshot a hub repo's config, tokenizer and weights (needs network; fails in one line offline)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # network, auth, missing repo: all user-facing
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not download {repo_id!r} from the Hugging Face Hub ({reason}): "
            "check the id and the network, or pass a local folder saved with save_pretrained"
        ) from None


def read_config(folder: Path) -> dict:
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: pass a model folder saved with save_pretrained")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder} has no config.json: pass a folder saved with save_pretrained")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{cfg_path} is not valid JSON ({exc}): re-save the model") from None
    if not isinstance(config, dict):
        raise UserError(f"{cfg_path} is not a JSON object: re-save the model")
    return config


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if not files and (folder / "pytorch_model.bin").is_file():
        files = [folder / "pytorch_model.bin"]
    if not files:
        raise UserError(f"{folder} holds no weights (*.safetensors or pytorch_model.bin): re-save the model")
    return files


def map_key(name: str, keymap: KeyMap) -> str | None:
    """The module name of checkpoint tensor ``name`` under ``keymap`` (None: not wanted)."""
    return next((new + name[len(old) :] for old, new in keymap if name.startswith(old)), None)


def read_tensors(folder: Path, keymap: KeyMap) -> dict[str, torch.Tensor]:
    """Every tensor the key map wants, from every weight file, under its module name."""
    out: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        if file.suffix == ".bin":
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            out.update((new, state[k]) for k in state if (new := map_key(k, keymap)) is not None)
            continue
        from safetensors import safe_open

        with safe_open(str(file), "pt") as handle:
            out.update((new, handle.get_tensor(k)) for k in handle.keys() if (new := map_key(k, keymap)) is not None)
    return out


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str, folder: Path) -> None:
    """Load ``state`` into ``module``; refuse when tensors of the module are missing."""
    expected = set(module.state_dict())
    missing = sorted(k for k in expected - set(state) if not k.endswith("position_ids") and not k.startswith("head."))
    if missing:
        raise UserError(
            f"{folder}: the {what} weights are missing {len(missing)} tensors (e.g. {missing[0]}): "
            "the checkpoint does not match its config.json"
        )
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def save_folder(config: dict, state: dict[str, torch.Tensor], folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the published single-file layout) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    return folder


def resolve_folder(spec: str) -> tuple[Path, str]:
    """A model folder or hub id -> (local folder, source kind 'folder' | 'hub')."""
    path = Path(spec).expanduser()
    if path.exists():
        return path, "folder"
    if is_hub_id(spec):
        return download_from_hub(spec), "hub"
    raise UserError(f"model folder {spec} does not exist: check the path, or pass a preset name")

"""Resolve ``--model``: a preset name, a local Hugging Face folder, or a hub id.

Folders are read without instantiating the language model: the vision config is built on its
own and only the vision-tower and projector tensors are read from the safetensors shards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from edgetrim.export.adapters import VisionSource, VisionTower, tower_from_vision_model
from edgetrim.export.presets import DEFAULT_PRESET, PRESETS, build_preset
from edgetrim.runtime.errors import UserError

VISION_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
DUAL_TYPES = {"clip": "clip", "siglip": "siglip"}  # full CLIP/SigLIP checkpoints: their vision half
LLAVA_TYPES = ("llava", "llava_next", "llava_onevision")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.safetensors.index.json", "*.txt", "*.model"]


def load_tower(spec: str | None, feature_layer: int | None = None) -> VisionTower:
    """``--model`` value -> VisionTower. ``feature_layer`` overrides the checkpoint's / preset's."""
    spec = spec or DEFAULT_PRESET
    if spec in PRESETS:
        tower = build_preset(spec)
        if feature_layer is not None:
            raise UserError("--feature-layer applies to checkpoint folders; presets fix their feature layer")
        return tower
    path = Path(spec).expanduser()
    if path.exists():
        return load_folder(path, feature_layer, VisionSource("folder", str(path.resolve()), "", False))
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        folder = download_from_hub(spec)
        return load_folder(folder, feature_layer, VisionSource("hub", spec, "", False))
    if "/" in spec or spec.startswith((".", "~")):
        raise UserError(f"model folder {spec} does not exist: check the path, or pass a preset name")
    raise UserError(f"unknown preset {spec!r}: choose one of {', '.join(PRESETS)}, a model folder or a hub id")


def download_from_hub(repo_id: str) -> Path:
    """Snapshot a hub repo's config and weights (needs network; fails in one line offline)."""
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
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path} is not valid JSON ({exc.msg}): re-save the model") from None


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


def read_tensors(folder: Path, keep) -> dict[str, torch.Tensor]:
    """Tensors whose name ``keep(name)`` maps to a new name (None: skip), from every weight file."""
    out: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        if file.suffix == ".bin":
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            out.update((new, state[k]) for k in state if (new := keep(k)) is not None)
            continue
        from safetensors import safe_open

        with safe_open(str(file), "pt") as handle:
            out.update((new, handle.get_tensor(k)) for k in handle.keys() if (new := keep(k)) is not None)
    return out


def strip_prefix(name: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return rest.removeprefix("vision_model.")
    return None


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str, folder: Path) -> None:
    expected = set(module.state_dict())
    missing = sorted(k for k in expected - set(state) if not k.endswith("position_ids") and not k.startswith("head."))
    if missing:
        raise UserError(
            f"{folder}: the {what} weights are missing {len(missing)} tensors (e.g. {missing[0]}): "
            "the checkpoint does not match its config.json"
        )
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)


def load_folder(folder: Path, feature_layer: int | None, source: VisionSource) -> VisionTower:
    cfg = read_config(folder)
    model_type = cfg.get("model_type", "")
    arch = ", ".join(cfg.get("architectures") or []) or model_type
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    projector = None
    if model_type in VISION_TYPES:
        family, vision_cfg, prefixes = VISION_TYPES[model_type], config, ("vision_model.", "")
        layer = -2 if family == "clip" else -1
    elif model_type in DUAL_TYPES:
        family, vision_cfg, prefixes = DUAL_TYPES[model_type], config.vision_config, ("vision_model.",)
        layer = -2 if family == "clip" else -1
    elif model_type in LLAVA_TYPES:
        vision_cfg = config.vision_config
        family = VISION_TYPES.get(vision_cfg.model_type)
        if family is None:
            raise UserError(
                f"{folder}: LLaVA vision tower {vision_cfg.model_type!r} is not supported: "
                "edgetrim exports CLIP and SigLIP towers"
            )
        prefixes = ("model.vision_tower.", "vision_tower.")
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise UserError(
                f"{folder}: vision_feature_layer={layer} (several layers concatenated) is not supported: "
                "pass --feature-layer N to pick one"
            )
        projector = build_llava_projector(model_type, config)
        state = read_tensors(
            folder, lambda n: strip_prefix(n, ("model.multi_modal_projector.", "multi_modal_projector."))
        )
        load_state(projector, state, "projector", folder)
        projector.eval()
    else:
        raise UserError(
            f"{folder}: architecture {arch!r} is not supported: edgetrim exports CLIPVisionModel, "
            "SiglipVisionModel and LLaVA / LLaVA-NeXT / LLaVA-OneVision checkpoints"
        )
    vision_cfg._attn_implementation = "eager"
    model = build_vision_from_config(family, vision_cfg)
    state = read_tensors(folder, lambda n: strip_prefix(n, prefixes))
    load_state(model, state, "vision tower", folder)
    mean, std = read_normalization(folder)
    source.architecture = arch
    source.config = {"family": family, "model_type": model_type, "feature_layer": feature_layer or layer}
    return tower_from_vision_model(
        model.eval(),
        family=family,
        feature_layer=feature_layer if feature_layer is not None else layer,
        projector=projector,
        mean=mean,
        std=std,
        source=source,
    )


def build_vision_from_config(family: str, vision_cfg) -> nn.Module:
    from transformers import CLIPVisionModel, SiglipVisionModel

    cls = CLIPVisionModel if family == "clip" else SiglipVisionModel
    return cls(vision_cfg)


def build_llava_projector(model_type: str, config) -> nn.Module:
    if model_type == "llava":
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector as Projector
    elif model_type == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import (
            LlavaNextMultiModalProjector as Projector,
        )
    else:
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            LlavaOnevisionMultiModalProjector as Projector,
        )
    return Projector(config)


def read_normalization(folder: Path) -> tuple[tuple | None, tuple | None]:
    """image_mean / image_std from the folder's preprocessor_config.json, if it has one."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    cfg = json.loads(path.read_text())
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    return (tuple(mean) if mean else None), (tuple(std) if std else None)

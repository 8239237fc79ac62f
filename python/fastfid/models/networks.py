"""The networks of the named spaces (fastfid.models.spaces), built by timm and loaded from their
publishers' checkpoints: ``pip install "fastfid[spaces]"`` (timm, huggingface_hub, safetensors).

Weights: ``weights=PATH`` (the publisher's file, or a state dict of timm's), else the library's own
cache: torch hub's checkpoints folder for DINOv2 (downloaded from Meta's URL, as torch.hub does),
the Hugging Face cache for the others (``hf_hub_download``; ``HF_HOME``/``HF_HUB_OFFLINE`` apply).
A file from the hub is checked against the SHA-256 the hub publishes for it (its blob's name).
"""

from __future__ import annotations

from typing import Any

import math
import os
import re
import sys
from pathlib import Path

import torch

from fastfid._imports import borrowed
from fastfid.models.spaces import INCEPTION, Space, get_space
from fastfid.models.weights import cache_dir, download, sha256_of, state_dict_problems

__all__ = ["SpaceNetwork", "build_network", "dinov2_pos_embed"]

EXTRA = 'pip install "fastfid[spaces]"'
# The classifier heads of the published checkpoints: the features are taken before them.
_CLASSIFIER_KEYS = ("head.weight", "head.bias", "head.fc.weight", "head.fc.bias")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def require(module: str):
    """Import a library the spaces need, or say in one line which extra installs it (or that
    torchvision cannot load beside torch)."""
    return borrowed(module, f"the representation spaces need {module.split('.')[0]}", EXTRA)


class SpaceNetwork(torch.nn.Module):
    """A space's network: float NCHW images in [0, 1] at ``input_size`` → (N, dims) features.

    ``weights``: a path, None (the published file, from the cache or downloaded) or False (random,
    for tests). ``space`` may be a name or a :class:`Space` (e.g. a small variant for tests).
    """

    def __init__(self, space: str | Space, weights=None):
        super().__init__()
        self.space = get_space(space) if isinstance(space, str) else space
        timm = require("timm")
        head = self.space.dims if self.space.projection else 0  # the projection is the head, kept
        self.network = timm.create_model(self.space.timm_model, pretrained=False, num_classes=head,
                                         **self.space.timm_options)
        self.dims = head or int(self.network.num_features)
        self.input_size = self.space.image_size
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(self.space.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.space.std).view(1, 3, 1, 1), persistent=False)
        self.weights_name = "random" if weights is False else load_weights(self.network, self.space, weights)
        self.eval()

    @property
    def feature_space(self) -> str:
        return f"{self.space.name} weights={self.weights_name}"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.space.projection:
            embedding = self.network.forward_head(self.network.forward_features(x))
            return torch.nn.functional.normalize(embedding, dim=-1)
        return self.network.forward_head(self.network.forward_features(x), pre_logits=True)


def build_network(name: str, weights=None, scaling: str = "pytorch-fid") -> torch.nn.Module:
    """The network of a space name; ``"inception"`` is the FID Inception-v3 (pool3, 2048)."""
    if name == INCEPTION:
        from fastfid.models.inception import FIDInceptionV3

        return FIDInceptionV3(2048, weights=weights, scaling=scaling)
    return SpaceNetwork(name, weights)


# --- weights ---------------------------------------------------------------------------------------
def load_weights(network: torch.nn.Module, space: Space, weights=None) -> str:
    """Load a space's weights into its timm network (strict: every key, every shape); returns the
    name statistics carry for them."""
    path = Path(weights) if weights is not None else published_file(space)
    if not path.is_file():
        raise FileNotFoundError(f"the {space.name} weights file {path} does not exist")
    state = read_state_dict(path)
    if space.converter == "dinov2" and "pos_embed" in state:
        patch_embed: Any = network.patch_embed  # timm's PatchEmbed (a Module to the type checker)
        grid = int(patch_embed.grid_size[0])
        state["pos_embed"] = dinov2_pos_embed(state["pos_embed"], grid)
    filter_fn = getattr(sys.modules[type(network).__module__], "checkpoint_filter_fn", None)
    try:
        if filter_fn is not None:
            state = filter_fn(state, network)
    except Exception as error:  # timm's converters index keys they expect
        raise ValueError(f"{path} does not hold {space.name} weights: timm cannot convert it ({type(error).__name__}: "
                         f"{error})") from error
    expected = network.state_dict()
    state = {k: v for k, v in state.items() if k in expected or k not in _CLASSIFIER_KEYS}
    problems = state_dict_problems(expected, state)
    if problems:
        raise ValueError(f"{path} does not hold the {space.name} weights ({space.timm_model}): {problems}")
    network.load_state_dict(state)
    if weights is None:
        return space.weights.name
    return f"{path.name}:sha256={sha256_of(path)[:12]}"


def read_state_dict(path: Path) -> dict:
    """A state dict from a .safetensors file or a torch file (weights only: nothing is executed)."""
    try:
        if path.suffix == ".safetensors":
            state = require("safetensors.torch").load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise
    except Exception as error:  # each reader raises its own types for a truncated or foreign file
        raise OSError(f"{path} is not a readable weight file ({type(error).__name__}: {str(error).strip()[:200]}); "
                      "if it is a cached download, delete it to fetch it again") from error
    for key in ("state_dict", "model"):  # some publishers wrap the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (names to tensors)")
    return dict(state)


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """DINOv2's positional embedding (trained at 518 px: 37 × 37 patches) for a grid × grid input, as
    the official model interpolates it: bicubic, no antialiasing, scale factor (grid + 0.1) / 37
    (its "interpolate_offset"). timm resamples to the size instead, with antialiasing, and
    transformers to the size without it; both move features (tests/test_spaces.py measures how far)."""
    prefix, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"a DINOv2 positional embedding of {patches.shape[1]} patches is not a square grid")
    if old == grid:
        return pos_embed
    dim = patches.shape[-1]
    scale = (grid + 0.1) / old
    resized = torch.nn.functional.interpolate(
        patches.float().reshape(1, old, old, dim).permute(0, 3, 1, 2), scale_factor=(scale, scale),
        mode="bicubic", antialias=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)
    return torch.cat([prefix, resized], dim=1)


def published_file(space: Space) -> Path:
    """The published weights in the library's cache, downloaded there first if missing."""
    source = space.weights
    advice = f"pass weights=PATH (--weights {space.name}=PATH) to a copy of the file"
    if source.url:
        target = cache_dir() / source.name
        if not target.exists():
            download(source.url, target, None, what=f"the {space.name} weights",
                     advice=f"offline, {advice}, or put it at {target}")
        return target
    hub = require("huggingface_hub")
    try:
        path = Path(hub.hf_hub_download(source.repo, source.filename))
    except Exception as error:  # offline, unreachable, gated or missing: huggingface_hub has many error types
        raise OSError(f"the {space.name} weights {source.repo}/{source.filename} are not in the Hugging Face cache "
                      f"({hub.constants.HF_HUB_CACHE}) and cannot be downloaded ({type(error).__name__}): {advice}, "
                      "or set HF_HOME to a cache that holds it") from error
    check_hub_blob(path, space.name)
    return path


def check_hub_blob(path: Path, what: str) -> None:
    """The HF cache stores a large file as blobs/<the SHA-256 the hub published>: the file must hash to it."""
    blob = Path(os.path.realpath(path))
    if _HEX64.fullmatch(blob.name) and sha256_of(blob) != blob.name:
        raise OSError(f"the cached {what} weights {path} do not match the SHA-256 the hub publishes for them "
                      f"({blob.name}): the file is damaged; delete {blob} to download it again")

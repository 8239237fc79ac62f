"""Feature networks: the FID Inception-v3 and the named representation spaces (DINOv2, CLIP, SigLIP,
ConvNeXt, MAE), their weights and preprocessing. The registry is torch-free (statistics name their
space); the networks need torch, and the spaces timm (``pip install "fastfid[spaces]"``)."""

from typing import TYPE_CHECKING

from fastfid.models.spaces import SPACE_RESIZE_MODES, Space, Weights, get_space, space_names, space_of
from fastfid.models.weights import FID_WEIGHTS_SHA256, FID_WEIGHTS_URL, WEIGHTS_VARIABLE, fid_weights_path

if TYPE_CHECKING:
    from fastfid.models.inception import FEATURE_DIMS, FIDInceptionV3
    from fastfid.models.networks import SpaceNetwork

__all__ = ["FEATURE_DIMS", "FIDInceptionV3", "FID_WEIGHTS_SHA256", "FID_WEIGHTS_URL", "SPACE_RESIZE_MODES", "Space",
           "SpaceNetwork", "WEIGHTS_VARIABLE", "Weights", "fid_weights_path", "get_space", "space_names", "space_of"]

_NEEDS_TORCH = {"FEATURE_DIMS": "fastfid.models.inception", "FIDInceptionV3": "fastfid.models.inception",
                "SpaceNetwork": "fastfid.models.networks"}


def __getattr__(name: str):
    """The networks import torch when first used, so that the registry alone does not."""
    if name in _NEEDS_TORCH:
        import importlib

        return getattr(importlib.import_module(_NEEDS_TORCH[name]), name)
    raise AttributeError(f"module 'fastfid.models' has no attribute {name!r}")

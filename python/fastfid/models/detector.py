"""NVIDIA's Inception detector as a feature network: ``inception-2015-12-05.pt``, the TorchScript
module StyleGAN2-ADA, StyleGAN3, EDM and EDM2 compute FID with. It takes uint8 NCHW images of any
size, resizes them inside itself (``grid_sample``, TensorFlow 1's bilinear) and scales them as the
2015 graph does; ``detector(images, return_features=True)`` gives pool3, 2048 values an image.

fastfid runs it as it is: images reach it at their own size, as 8-bit values. Its pickled twin,
``inception-2015-12-05.pkl``, is refused: unpickling it would run whatever code it names.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

__all__ = ["DETECTOR_URL", "TorchScriptDetector", "is_torchscript"]

DETECTOR_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


def is_torchscript(path) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save writes its code and constants beside the
    tensors; torch.save's state dicts have neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


class TorchScriptDetector(torch.nn.Module):
    """NVIDIA's detector (or any TorchScript module with its interface: ``forward(uint8 NCHW,
    return_features=True)`` → (N, 2048) float32) behind fastfid's network interface: float NCHW
    images in [0, 1] at their own size, turned back into the 8-bit values they were decoded from."""

    dims = 2048
    input_size = None  # the detector resizes inside itself

    def __init__(self, path):
        super().__init__()
        from fastfid.models.weights import sha256_of

        path = Path(path)
        if path.suffix == ".pkl":
            raise ValueError(f"{path}: NVIDIA's pickled detector runs code when it is unpickled, so it is not read; "
                             f"use its TorchScript twin, {DETECTOR_URL}")
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, the format NVIDIA publishes
                warnings.simplefilter("ignore", DeprecationWarning)
                self.detector = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # torch raises RuntimeError and others for a damaged archive
            raise OSError(f"{path} is not a loadable TorchScript detector ({type(error).__name__}: {error})") \
                from error
        self.detector.eval()
        self.weights_name = f"{path.name}:sha256={sha256_of(path)[:12]}"

    @property
    def feature_space(self) -> str:
        return f"TorchScriptDetector(dims=2048, weights={self.weights_name})"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Decoded 8-bit images arrive as u/255 in float32: ×255 and rounding gives u back exactly.
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8)
        features = self.detector(pixels, return_features=True)
        if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.shape[1] != self.dims:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"the detector {self.weights_name} returned {shape}, not (N, 2048) features")
        return features.float()

"""The peers (pytorch-fid, torchmetrics, clean-fid, torch-fidelity) run for real in the drop-in
tests, on one random weight file loaded into every network (the real file cannot be downloaded
here): it is saved under both names the peers download, in a private torch hub cache."""

from __future__ import annotations

import importlib

import pytest
import torch

# The registry's torchvision is built against CUDA torch; with the CPU torch its compiled operators
# cannot load and its import fails on registering their meta functions. The peers use none of those
# operators (only torchvision's Inception-v3 module code), so their two schemas are declared first.
_TORCHVISION_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_shim_library = None


def declare_torchvision_ops() -> None:
    """Make the registry's torchvision importable beside a CPU torch (see above); a no-op where it
    imports as it is (a matching torch and torchvision) or is not installed."""
    global _shim_library
    if _shim_library is not None:
        return
    try:
        importlib.import_module("torchvision")
        _shim_library = False
        return
    except ImportError:
        _shim_library = False
        return
    except RuntimeError:
        pass
    _shim_library = torch.library.Library("torchvision", "DEF")
    for schema in _TORCHVISION_OPS:
        _shim_library.define(schema)
    for name in [m for m in list(importlib.sys.modules) if m.startswith("torchvision")]:
        del importlib.sys.modules[name]


def peer(module: str):
    """Import a peer's module, or skip the test with the reason."""
    declare_torchvision_ops()
    return pytest.importorskip(module, reason=f"{module.split('.')[0]} is not installed")


def calibrated_state_dict(seed: int = 0) -> dict:
    """Random FID Inception weights whose batch norms carry the statistics of random images, so
    that features are of order one (a default-initialised network's vanish to ~1e-8 by pool3)."""
    from fastfid.models import FIDInceptionV3

    torch.manual_seed(seed)
    network = FIDInceptionV3(weights=False)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch sets the running statistics
        norm.training = True
    images = torch.rand(6, 3, 299, 299)
    images = (images + torch.roll(images, 1, dims=-1) + torch.roll(images, 1, dims=-2)) / 3  # some spatial correlation
    with torch.no_grad():
        network(images)
    for norm in norms:
        norm.training = False
    # Class logits of a few units, as a trained network's: much larger ones underflow float32 softmax
    # probabilities to 0, and a peer computing in float32 then returns NaN for the Inception Score.
    network.fc.weight.mul_(0.05)
    return network.state_dict()

"""The preprocessing modes: how images reach the network, named after the library whose published
numbers they reproduce (see fastfid.data for the code). Torch-free, so that statistics and feature
files are read without it.

| mode                | resize to 299 × 299                                   | network input        |
| ------------------- | ----------------------------------------------------- | -------------------- |
| "pytorch-fid"       | bilinear, half-pixel centres, no antialiasing         | 2·u/255 − 1          |
| "torch-fidelity"    | TensorFlow 1's bilinear (sample i·in/out, no centres) | (u − 128)/128        |
| "torchmetrics"      | bilinear, half-pixel centres, antialiased             | (u − 128)/128        |
| "clean"             | PIL bicubic per channel on floats (clean-fid)         | (u − 128)/128        |
| "legacy_tensorflow" | TensorFlow 1's bilinear, as clean-fid emulates it     | (u − 128)/128        |

(u: pixel values 0–255.) torch-fidelity's is also torchmetrics' with ``antialias=False``; clean-fid's
"legacy_pytorch" is "pytorch-fid".
"""

from __future__ import annotations

RESIZE_MODES = ("pytorch-fid", "torch-fidelity", "torchmetrics", "clean", "legacy_tensorflow")


def check_resize(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    return mode


def input_scaling(mode: str) -> str:
    """How the network maps [0, 1] pixels to its input: "pytorch-fid" (2x − 1) or "tensorflow"
    ((255x − 128) / 128, the 2015 graph's own scaling, used by every mode but pytorch-fid's)."""
    return "pytorch-fid" if check_resize(mode) == "pytorch-fid" else "tensorflow"

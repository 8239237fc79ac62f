"""The names of the resize modes images go through before the network, as the published numbers
were made (see fastfid.data for what each does). Torch-free, so that statistics and feature files
are read without it."""

from __future__ import annotations

RESIZE_MODES = ("pytorch-fid", "clean")


def check_resize(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")
    return mode

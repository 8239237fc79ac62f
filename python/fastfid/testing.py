"""Tools for people who debug or extend fastfid's CUDA kernels without a GPU.

:func:`emulated_cuda` runs the device path on the CPU, in the spirit of numba's CUDA simulator:
under it, CPU torch tensors take the route CUDA tensors take (the same host code in
``fastfid._cuda``, the same kernel source), with the CUDA driver replaced by its emulation, where
each CUDA thread is a fiber and device memory is host memory. It is some 10⁴ times slower than a
GPU: use small sizes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastfid import _cuda, _device

__all__ = ["emulated_cuda"]


@contextlib.contextmanager
def emulated_cuda(*, devices: int = 1) -> Iterator[_device.Emulation]:
    """Within the block, CPU torch tensors take fastfid's CUDA path on an emulated driver with
    ``devices`` GPUs (work goes to device 0 unless the yielded object's ``device`` is changed).

    ``FeatureStats`` created there (``FeatureStats(d, device="cpu")``, ``from_features(tensor)``)
    keep a device state updated by the statistics kernels; ``frechet_distance`` and ``fid`` on
    tensors or such statistics run the distance kernels; ``fastfid.loss`` takes the device route.
    ``fastfid._cuda.emulator`` counts launches and copies to the host and can inject driver errors.
    Not reentrant across threads: the emulation is process-wide while the block runs.
    """
    if not (isinstance(devices, int) and devices >= 1):
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    previous = _device._emulation
    _cuda.emulator.reset(devices)
    _device._forget("emulated")
    _device._emulation = _device.Emulation(_cuda.emulated_backend())
    try:
        yield _device._emulation
    finally:
        _device._emulation = previous
        _device._forget("emulated")

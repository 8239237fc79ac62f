"""Tools for people who debug or extend fastfid's CUDA kernels without a GPU.

:func:`emulated_cuda` runs the device path on the CPU, in the spirit of numba's CUDA simulator:
under it, CPU torch tensors take the route CUDA tensors take (the same host code in
``fastfid._cuda``, the same kernel source), with the CUDA driver replaced by its emulation, where
each CUDA thread is a fiber and device memory is host memory. It is some 10⁴ times slower than a
GPU: use small sizes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from fastfid import _device
from fastfid._native import cuda as _cuda

__all__ = ["emulated_cuda"]


@contextlib.contextmanager
def emulated_cuda(*, devices: int = 1, architecture: str = "sm_90",
                  validate: bool = False) -> Iterator[_device.Emulation]:
    """Within the block, CPU torch tensors take fastfid's CUDA path on an emulated driver with
    ``devices`` GPUs (work goes to device 0 unless the yielded object's ``device`` is changed) of
    ``architecture``, which picks the kernels' variants as on such a GPU: ``"sm_90"`` (H100) uses the
    FP64 tensor cores, ``"sm_89"`` (L4, RTX 4090) FP64 FMAs and 3×TF32 Newton–Schulz products.

    ``FeatureStats`` created there (``FeatureStats(d, device="cpu")``, ``from_features(tensor)``)
    keep a device state updated by the statistics kernels; ``frechet_distance`` and ``fid`` on
    tensors or such statistics run the distance kernels; ``fastfid.loss`` takes the device route.
    ``fastfid._cuda.emulator`` counts launches and copies to the host and can inject driver errors
    and wrong values (``inject_fault``). ``validate=True`` validates the kernels at first use as on a
    GPU (``fastfid._device.validation``; some 15 s here, so off by default).
    Not reentrant across threads: the emulation is process-wide while the block runs.
    """
    if not (isinstance(devices, int) and devices >= 1):
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    match = re.fullmatch(r"sm_(\d+)(\d)", architecture) if isinstance(architecture, str) else None
    if match is None or int(match[1]) * 10 + int(match[2]) < 80:
        raise ValueError(f"architecture must be 'sm_XY' of a GPU fastfid's kernels support (sm_80 or later), "
                         f"got {architecture!r}")
    previous = _device.current_emulation()
    _cuda.emulator.reset(devices, int(match[1]) * 10 + int(match[2]))
    emulation = _device.Emulation(_cuda.emulated_backend(), validate=validate)
    _device.set_emulation(emulation)
    try:
        yield emulation
    finally:
        _device.set_emulation(previous)

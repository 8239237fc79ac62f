"""Statistics and Fréchet distances where the features are: on a torch device (CUDA).

Two implementations of one contract:

* fastfid's kernels (csrc/cuda), driven by host code in ``fastfid._cuda`` through the CUDA driver
  API: the system's ``libcuda.so.1`` (no CUDA runtime is linked, so they work beside any CUDA
  build of torch), or the CPU emulation of the driver, under which the same host code runs the
  kernels on CPU tensors (``fastfid.testing.emulated_cuda()``, and the tests);
* torch ops in float64 on the device: the fallback, the statistics' steps as the kernels take them
  and the distance by coupled Newton–Schulz on Σ₁Σ₂ (the kernels' route for FD gradients).

Before fastfid's kernels are trusted on a device, a probe loads them there and runs one, and every
variant the device would use is validated against the CPU core (``validation``): a variant that
gives wrong values there is not used (its work takes the torch route, warned once). If the
probe or a later call fails (no driver, a driver too old for the kernels, no kernel image for the
GPU, a launch refused, no memory for the workspace), that device goes to the torch route with one
``RuntimeWarning`` naming the cause, and the call gives the same number. An error reported at a
synchronisation (a kernel that faulted on the device) is raised: the device cannot be trusted.

The rooms: ``routing`` (which route a device takes, the probe, the emulation switch, the C++ codes
read from ``_cuda``), ``validation`` (each variant checked at first use, and its record), ``stats``
(DeviceStats), ``frechet`` (the distance), ``routes`` (the FD route measured fastest on a device). Validation happens
here, before any address reaches native code. torch is imported lazily.
"""

from fastfid._device.frechet import (TRACE_TOLERANCE, DeviceFrechet, PreparedCovariance, check_covariance, frechet,
                                     frechet_with_torch, square_tensor, vector_tensor)
from fastfid._device.routing import (CudaError, DeviceKernels, Emulation, attempt, check_precision, cuda_compiled,
                                     current_emulation, emulating, give_up, is_device_tensor, kernels_for,
                                     set_emulation, takes_device_path)
from fastfid._device.stats import DeviceStats, feature_tensor

__all__ = ["TRACE_TOLERANCE", "CudaError", "DeviceFrechet", "DeviceKernels", "DeviceStats", "Emulation",
           "PreparedCovariance", "attempt", "check_covariance", "check_precision", "cuda_compiled",
           "current_emulation", "emulating", "feature_tensor", "frechet", "frechet_with_torch", "give_up",
           "is_device_tensor", "kernels_for", "set_emulation", "square_tensor", "takes_device_path",
           "vector_tensor"]

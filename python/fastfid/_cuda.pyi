"""Type stubs for fastfid._cuda (csrc/cuda), built when nvcc is available. Buffers are device
addresses (torch's data_ptr()); fastfid/_device.py validates everything before calling."""

from typing import TypedDict

class NewtonSchulzInfo(TypedDict):
    trace_sqrt: float
    scale: float
    step: float
    iterations: int
    converged: bool

def stats_workspace_doubles(dim: int) -> int: ...
def newton_schulz_workspace_doubles(dim: int, max_iterations: int) -> int: ...
def accumulate(features: int, feature_type: int, rows: int, cols: int, row_stride: int, col_stride: int, *,
               mean: int, comoment: int, counters: int, workspace: int, row_slices: int = 0, device: int = 0,
               stream: int = 0) -> None: ...
def merge(dim: int, *, mean: int, comoment: int, counters: int, other_mean: int, other_comoment: int,
          other_counters: int, device: int = 0, stream: int = 0) -> None: ...
def newton_schulz(sigma1: int, sigma2: int, dim: int, *, workspace: int, sqrt_out: int = 0,
                  inverse_sqrt_out: int = 0, tolerance: float = 1e-12, max_iterations: int = 100, device: int = 0,
                  stream: int = 0) -> NewtonSchulzInfo: ...

"""Type stubs for fastfid's native core (csrc/). Python code calls it through fastfid's API."""

from typing import TypedDict

import numpy as np
import numpy.typing as npt


def accumulate(features: npt.NDArray[np.floating], count: int, mean: npt.NDArray[np.float64],
               comoment: npt.NDArray[np.float64]) -> int: ...
def merge(count: int, mean: npt.NDArray[np.float64], comoment: npt.NDArray[np.float64], other_count: int,
          other_mean: npt.NDArray[np.float64], other_comoment: npt.NDArray[np.float64]) -> int: ...
def panel_rows(dim: int) -> int: ...
def require_finite(features: npt.NDArray[np.floating]) -> None: ...
def symmetrize_upper(matrix: npt.NDArray[np.float64]) -> None: ...
def validate_covariance(sigma: npt.NDArray[np.float64], name: str) -> None: ...
def set_blas_threads(threads: int) -> None: ...
def blas_threads() -> int: ...

class PsdFactor:
    dim: int
    rank: int
    trace: float
    scale: float
    pivoted: bool
    def __init__(self, sigma: npt.NDArray[np.float64], name: str = "sigma1") -> None: ...

class TraceInfo(TypedDict):
    trace_sqrt: float
    rank: int
    clamped: int
    most_negative: float
    max_eigenvalue: float
    iterations: int
    step: float
    converged: bool

def trace_sqrt_product(factor: PsdFactor, sigma2: npt.NDArray[np.float64], *, method: str = "eigh",
                       tolerance: float = 1e-12, max_iterations: int = 100) -> TraceInfo: ...

"""fastfid: fast, exact Fréchet distances (FID) with a native core.

Streaming, mergeable feature statistics (:class:`FeatureStats`) and the Fréchet distance computed
through the symmetric eigenvalue route (:func:`frechet_distance`), with drop-in replacements for
pytorch-fid's functions. Importing fastfid does not import torch.
"""

from importlib.metadata import version as _version

# Load the BLAS/LAPACK library the native core links against before the core itself.
import scipy_openblas32 as _openblas  # noqa: F401

from fastfid._device import cuda_compiled
from fastfid.distance import FrechetResult, Reference, calculate_frechet_distance, fid, frechet_distance
from fastfid.stats import FeatureStats

__version__ = _version("fastfid")  # pyproject.toml is the one place it is set

__all__ = [
    "FeatureStats",
    "FrechetResult",
    "Reference",
    "calculate_frechet_distance",
    "cuda_compiled",
    "fid",
    "frechet_distance",
    "__version__",
]

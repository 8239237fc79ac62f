"""fastfid: fast, exact Fréchet distances (FID) with a native core.

Streaming, mergeable feature statistics (:class:`FeatureStats`) and the Fréchet distance computed
through the symmetric eigenvalue route (:func:`frechet_distance`), with drop-in replacements for
pytorch-fid's functions; error bars, FD∞, seed panels and verdicts (``fastfid.uncertainty``);
KID, precision/recall, density/coverage (``fastfid.metrics``); :func:`fdr` for FDr^k over
several representation spaces; and
``fastfid.loss`` (needs torch, imported on first use) for FD as a training loss. Importing
fastfid does not import torch.
"""

from importlib.metadata import version as _version

# Load the BLAS/LAPACK library the native core links against before the core itself.
import scipy_openblas32 as _openblas  # noqa: F401

from fastfid._device import cuda_compiled
from fastfid.distance import FrechetResult, Reference, calculate_frechet_distance, fid, frechet_distance
from fastfid.metrics import density_coverage, kid, precision_recall
from fastfid.representations import FDrResult, fdr
from fastfid.stats import FeatureStats
from fastfid.uncertainty import compare, fd_infinity, fid_with_error, seed_study

__version__ = _version("fastfid")  # pyproject.toml is the one place it is set

__all__ = [
    "FDrResult",
    "FeatureStats",
    "FrechetResult",
    "Reference",
    "calculate_frechet_distance",
    "compare",
    "cuda_compiled",
    "density_coverage",
    "fd_infinity",
    "fdr",
    "fid",
    "fid_with_error",
    "frechet_distance",
    "kid",
    "precision_recall",
    "seed_study",
    "__version__",
]


def __getattr__(name: str):
    # fastfid.loss needs torch: imported when first named, so that `import fastfid` stays light.
    if name == "loss":
        import importlib

        return importlib.import_module("fastfid.loss")
    raise AttributeError(f"module 'fastfid' has no attribute {name!r}")

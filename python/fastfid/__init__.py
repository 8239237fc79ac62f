"""fastfid: fast, exact Fréchet distances (FID) with a native core.

Streaming, mergeable feature statistics (:class:`FeatureStats`) and the Fréchet distance computed
through the symmetric eigenvalue route (:func:`frechet_distance`), with drop-in replacements for
pytorch-fid's functions; error bars, FD∞, seed panels and verdicts (``fastfid.uncertainty``);
KID, precision/recall, density/coverage (``fastfid.metrics``); CMMD of embeddings (:func:`cmmd`,
``fastfid.mmd``); :func:`fdr` for FDr^k over
several representation spaces (:class:`SpaceStats`: statistics of several spaces from one pass,
``fastfid.models.space_names()``). With torch: images to FID (:func:`compute_fid`,
:func:`compute_stats`, :func:`inception_score`, the torchmetrics-style :class:`FID`, the FID
Inception-v3 in ``fastfid.models``) and ``fastfid.loss`` for FD as a training loss. The
evaluation service (``fastfid serve``, ``fastfid.service``) and its client (``fastfid.client``),
and logging to MLflow, W&B and TensorBoard (``fastfid.tracking``). Importing fastfid does not
import torch: those parts import it when first used.
"""

# The native modules, in their order (numpy, the BLAS wheel, the core, the device path).
from fastfid import _native  # noqa: F401
from fastfid._device import cuda_compiled
from fastfid._version import __version__
from fastfid.distance import FrechetResult, Reference, calculate_frechet_distance, fid, frechet_distance
from fastfid.extraction import FIDResult, compute_fid, compute_stats, inception_score
from fastfid.metrics import InceptionScore, density_coverage, kid, precision_recall
from fastfid.mmd import CMMDResult, cmmd
from fastfid.representations import FDrResult, SpaceStats, fdr
from fastfid.stats import FeatureStats
from fastfid.uncertainty import compare, fd_infinity, fid_with_error, seed_study

load_spaces = SpaceStats.load

__all__ = [
    "CMMDResult",
    "FDrResult",
    "FID",
    "FIDResult",
    "FeatureStats",
    "FrechetResult",
    "InceptionScore",
    "Reference",
    "SpaceStats",
    "calculate_frechet_distance",
    "cmmd",
    "compare",
    "compute_fid",
    "compute_stats",
    "cuda_compiled",
    "density_coverage",
    "fd_infinity",
    "fdr",
    "fid",
    "fid_with_error",
    "frechet_distance",
    "inception_score",
    "kid",
    "load_spaces",
    "precision_recall",
    "seed_study",
    "__version__",
]


_NEEDS_TORCH = {"loss": "fastfid.loss", "models": "fastfid.models", "data": "fastfid.data", "FID": "fastfid.fid_metric"}


def __getattr__(name: str):
    # These need torch: imported when first named, so that `import fastfid` stays light.
    if name in _NEEDS_TORCH:
        import importlib

        module = importlib.import_module(_NEEDS_TORCH[name])
        return getattr(module, name) if name == "FID" else module
    raise AttributeError(f"module 'fastfid' has no attribute {name!r}")

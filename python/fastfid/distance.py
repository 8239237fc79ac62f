"""The Fréchet distance between two Gaussians, FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂).

The trace term comes from the native core: Σ₁ = P L Lᵀ Pᵀ by Cholesky (pivoted only when Σ₁ is
semidefinite), then the eigenvalues of the symmetric positive semidefinite Lᵀ Σ₂ L ("eigh"), or
Newton–Schulz on that matrix ("newton_schulz"), all in float64. Both covariances are factored and
the one of lower rank is taken as Σ₁, so that FD(a, b) = FD(b, a) when one is singular. "sqrtm"
runs pytorch-fid's scipy reference. Inputs on a
CUDA device stay there: the CUDA kernels run scaled Newton–Schulz on the same symmetric matrix and
certify its corrected trace with a bound, or take its float64 eigenvalues (fastfid/_device.py).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Union, overload

import numpy as np

from fastfid import _device, _threads
from fastfid._native import core as _core
from fastfid._arrays import as_covariance, as_mean
from fastfid._typing import Array
from fastfid.stats import FeatureStats

METHODS = ("auto", "eigh", "newton_schulz", "sqrtm")
# Statistics: FeatureStats, the path of a statistics .npz, or a (mu, sigma) pair.
StatsLike = Union[FeatureStats, str, os.PathLike, tuple[Array, Array]]


@dataclass(frozen=True)
class FrechetResult:
    """A Fréchet distance with the diagnostics of how its trace term was computed."""

    value: float
    """The distance, clamped at 0 (rounding can push an FD of identical statistics below 0)."""
    trace_sqrt: float
    """tr √(Σ₁Σ₂)."""
    mean_term: float
    """‖μ₁ − μ₂‖²."""
    method: str
    """"eigh", "newton_schulz" or "sqrtm"."""
    rank: int
    """Rank of Σ₁ found by the pivoted Cholesky factorisation (the size of the symmetric problem);
    d on a device, where the symmetric problem is d × d."""
    iterations: int = 0
    """Newton–Schulz iterations (0 for the other methods)."""
    clamped: int = 0
    """Eigenvalues of Lᵀ Σ₂ L that rounding made negative and that were clamped at 0."""
    most_negative: float = 0.0
    """The most negative of those eigenvalues (0 if none)."""
    converged: bool = True
    """False if Newton–Schulz stopped on its iteration limit or its divergence guard."""
    error_bound: float = 0.0
    """On a device, the bound on |value − the exact FD| that the corrected Newton–Schulz route
    certified (≤ trace_tolerance × (tr Σ₁ + tr Σ₂), else the exact route ran and this is 0)."""

    def __float__(self) -> float:
        return self.value

    def as_dict(self) -> dict:
        """The distance (as ``fid``) and its diagnostics, JSON-able."""
        return {"fid": self.value, "trace_sqrt": self.trace_sqrt, "mean_term": self.mean_term, "method": self.method,
                "rank": self.rank, "iterations": self.iterations, "clamped": self.clamped,
                "most_negative": self.most_negative, "converged": self.converged, "error_bound": self.error_bound}


@overload
def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array, *, method: str = ..., eps: float = ...,
                     return_info: Literal[False] = ..., tolerance: float = ..., max_iterations: int = ...,
                     trace_tolerance: float | None = ...) -> float: ...
@overload
def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array, *, method: str = ..., eps: float = ...,
                     return_info: Literal[True], tolerance: float = ..., max_iterations: int = ...,
                     trace_tolerance: float | None = ...) -> FrechetResult: ...
def frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array, *, method: str = "auto",
                     eps: float = 1e-6, return_info: bool = False, tolerance: float = 1e-12,
                     max_iterations: int = 100, trace_tolerance: float | None = None) -> float | FrechetResult:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Inputs are numpy arrays or torch tensors of any float dtype; the computation is float64.
    ``method``: "auto" (= "eigh" on the CPU, "newton_schulz" when an input is on a CUDA device),
    "eigh" (exact symmetric eigenvalue route), "newton_schulz" (coupled iteration, stopping when
    the relative step ‖Y_{k+1} − Y_k‖_F/‖Y_k‖_F ≤ ``tolerance`` or after ``max_iterations``; on
    the CPU it iterates on the symmetric r × r matrix, on a device on Σ₁Σ₂), or "sqrtm" (pytorch-fid's scipy
    route, needs scipy). "eigh" and "sqrtm" copy device inputs to the host. ``eps`` is
    pytorch-fid's diagonal offset, used only by "sqrtm" when its square root is not finite; the
    symmetric routes never need it. On a CUDA device, fastfid's kernels run Newton–Schulz on the
    symmetric A = Lᵀ Σ₂ L, correct its trace in float64 and bound the error; where the bound exceeds
    ``trace_tolerance`` × (tr Σ₁ + tr Σ₂) (default 1e-8) the float64 eigenvalues of A decide.
    Returns a float, or a :class:`FrechetResult` with ``return_info=True``.
    """
    inputs: tuple[Any, ...] = (mu1, sigma1, mu2, sigma2)
    device = next((x.device for x in inputs if _device.is_device_tensor(x)), None)
    if device is not None:
        if _resolve_method(method, on_device=True) == "newton_schulz":
            result = _device_route(mu1, sigma1, mu2, sigma2, device, _device.kernels_for(device), tolerance,
                                   max_iterations, trace_tolerance)
            return result if return_info else result.value
        inputs = tuple(x.cpu() if _device.is_device_tensor(x) else x for x in inputs)
    mu1, mu2 = as_mean(inputs[0], "mu1"), as_mean(inputs[2], "mu2")
    sigma1, sigma2 = as_covariance(inputs[1], "sigma1"), as_covariance(inputs[3], "sigma2")
    _check_shapes(mu1, sigma1, mu2, sigma2)
    method = _resolve_method(method)
    if method == "sqrtm":
        result = _sqrtm_route(mu1, sigma1, mu2, sigma2, eps)
    else:
        _core.validate_covariance(sigma1, "sigma1")
        _core.validate_covariance(sigma2, "sigma2")
        factor1, factor2 = _factor(sigma1, "sigma1"), _factor(sigma2, "sigma2")
        result = _from_lower_rank(factor1, mu1, sigma1, factor2, mu2, sigma2, method, tolerance, max_iterations)
    return result if return_info else result.value


def calculate_frechet_distance(mu1: Array, sigma1: Array, mu2: Array, sigma2: Array, eps: float = 1e-6) -> np.float64:
    """Drop-in for ``pytorch_fid.fid_score.calculate_frechet_distance``: same arguments, returns a
    numpy float64, computed exactly through the symmetric route instead of scipy's sqrtm (on CUDA
    tensors: by Newton–Schulz on the device)."""
    return np.float64(frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps))


class Reference:
    """Reference statistics factorised once, for comparing many checkpoints against one dataset.

    ``stats`` is a :class:`FeatureStats`, a path to a statistics ``.npz``, or a ``(mu, sigma)`` pair.
    ``device`` (e.g. ``"cuda"``; by default the device of ``stats``) keeps the reference there,
    divided and Cholesky-factored once on that device: each ``distance`` then runs the kernels'
    symmetric route with that factor (the other side is copied to the device if it is not there),
    and only the exact host route (``method="eigh"``, or a singular other side with
    ``method="auto"``) factors on the host, once, when first needed.
    """

    def __init__(self, stats: StatsLike, *, device=None):
        stats = _as_stats(stats, "stats")
        check_features(stats, "reference")
        if device is None and stats._device_state is not None:
            device = stats._device_state.device
        # float64 arrays, or tensors on the reference's device
        self.mean: Any = None
        self._sigma: Any = None
        self._device = None
        if device is not None and (str(device) != "cpu" or _device.emulating()):
            import torch

            self._device = torch.device(device)
        if self._device is None or not _device.takes_device_path(self._device):
            self._device = None
            host = stats if stats.device == "cpu" else stats.to("cpu")
            self.mean, self._sigma = host.mean, host.cov
            _core.validate_covariance(self._sigma, "reference sigma")
            self._host_factor = _factor(self._sigma, "reference sigma")
            return
        self.mean = _device.vector_tensor(stats.mean, self._device, "reference mu")
        self._sigma = _device.square_tensor(stats.cov, self._device, "reference sigma")
        _device.check_covariance(self._sigma, "reference sigma")
        prepared = _device.PreparedCovariance.of(self._sigma)
        # Only a reference with a factor is kept prepared (one sync, here); a singular one leaves the
        # choice of side to each distance, as frechet_distance does.
        self._prepared = prepared if prepared.has_factor() else None
        self._host_factor = None  # the host route's, made when first needed

    @property
    def device(self):
        """"cpu", or the torch.device the reference lives on."""
        return "cpu" if self._device is None else self._device

    @property
    def dim(self) -> int:
        return int(self._sigma.shape[0])

    @property
    def rank(self) -> int:
        """The reference covariance's numerical rank (on a device: from its host factor, made once)."""
        return self._factor_on_host().rank

    def _factor_on_host(self):
        if self._host_factor is None:
            sigma = self._sigma.cpu().numpy()
            _core.validate_covariance(sigma, "reference sigma")
            self._host_factor = _factor(sigma, "reference sigma")
        return self._host_factor

    @overload
    def distance(self, other: StatsLike, *, method: str = ..., return_info: Literal[False] = ...,
                 tolerance: float = ..., max_iterations: int = ..., trace_tolerance: float | None = ...) -> float: ...
    @overload
    def distance(self, other: StatsLike, *, method: str = ..., return_info: Literal[True],
                 tolerance: float = ..., max_iterations: int = ...,
                 trace_tolerance: float | None = ...) -> FrechetResult: ...
    def distance(self, other: StatsLike, *, method: str = "auto", return_info: bool = False,
                 tolerance: float = 1e-12, max_iterations: int = 100,
                 trace_tolerance: float | None = None) -> float | FrechetResult:
        """FD between ``other`` (FeatureStats, .npz path or (mu, sigma)) and this reference; the
        keyword arguments are :func:`frechet_distance`'s."""
        declared = _declared_dim(other)  # a file's from its headers, before it is read
        if declared is not None and declared != self.dim:
            raise ValueError(f"statistics of dim {declared} cannot be compared with a reference of dim {self.dim}")
        stats = _as_stats(other, "other")
        if stats.dim != self.dim:
            raise ValueError(f"statistics of dim {stats.dim} cannot be compared with a reference of dim {self.dim}")
        check_features(stats, "compared")
        if method == "sqrtm":
            raise ValueError("method='sqrtm' does not use a factorised reference; call frechet_distance instead")
        if self._device is not None:
            singular = stats.count is not None and stats.count <= stats.dim
            if _resolve_method(method, on_device=True) == "newton_schulz" and not (method == "auto" and singular):
                kernels = _device.kernels_for(self._device)  # asked each time: the device may have given up since
                result = _device_route(self.mean, self._sigma, stats.mean, stats.cov, self._device, kernels,
                                       tolerance, max_iterations, trace_tolerance, prepared1=self._prepared)
                return result if return_info else result.value
        if stats.device != "cpu":
            stats = stats.to("cpu")  # O(d²) to the host, where the factor is
        method = _resolve_method(method)
        sigma = stats.cov
        _core.validate_covariance(sigma, "sigma2")
        mean = self.mean if self._device is None else self.mean.cpu().numpy()
        reference_sigma = self._sigma if self._device is None else self._sigma.cpu().numpy()
        result = _from_lower_rank(self._factor_on_host(), mean, reference_sigma, _factor(sigma, "sigma2"),
                                  stats.mean, sigma, method, tolerance, max_iterations)
        return result if return_info else result.value

    def __repr__(self) -> str:
        if self._device is None:
            return f"Reference(dim={self.dim}, rank={self.rank})"
        return f"Reference(dim={self.dim}, device={str(self._device)!r})"


VANISHING_MEAN_SQUARE = 1e-10
"""Features whose mean square (per dimension) is below this have vanished: the networks fastfid knows
give 1e-4 and more (Inception's pool3 about 0.1, a unit-norm 8192-d embedding 1.2e-4), while an
untrained Inception (batch norms at their defaults) gives about 1e-14, and two sets of such features
have an FD of about 0 whatever the images."""


class DegenerateFeatures(ValueError):
    """Statistics whose features vanish: an FD from them would be about 0 whatever the inputs."""


def check_features(stats: FeatureStats, side: str) -> None:
    """Refuse statistics whose features vanish (a silent FID of 0, issue 30's first hour); warn when a
    set's samples are all alike (variance 0: one image repeated, a collapsed generator), whose FD is
    valid but says only that."""
    mean_square, variance = stats.scale()
    if not (math.isfinite(mean_square) and variance >= 0):
        return  # not a covariance at all (NaN, a negative trace): the distance's own checks say what is wrong
    if mean_square < VANISHING_MEAN_SQUARE:
        raise DegenerateFeatures(
            f"the {side} statistics' features vanish (mean square {mean_square:.1e} per dimension, where real "
            f"networks give 1e-4 and more): an untrained network (batch norms at their defaults) or blank inputs; "
            f"their FD would be about 0 whatever the images, so it is refused")
    if variance <= 1e-12 * mean_square:
        warnings.warn(f"the {side} statistics have no variance: every sample gave the same features (one image "
                      "repeated, or a collapsed generator); the FD is valid but measures only that",
                      RuntimeWarning, stacklevel=3)


def _refuse_different_spaces(a: str | None, b: str | None) -> None:
    """Statistics of two named representation spaces (Inception, DINOv2, CLIP, ...) have no distance
    between them: refused, whatever their widths (DINOv2-L and CLIP-L are both 1024-d)."""
    from fastfid.models.spaces import space_of

    first, second = space_of(a), space_of(b)
    if first and second and first != second:
        raise ValueError(f"cannot compare statistics of different representation spaces: {first} ({a!r}) and "
                         f"{second} ({b!r})")


@overload
def fid(a: StatsLike, b: StatsLike, *, method: str = ..., eps: float = ..., return_info: Literal[False] = ...,
        tolerance: float = ..., max_iterations: int = ..., trace_tolerance: float | None = ...) -> float: ...
@overload
def fid(a: StatsLike, b: StatsLike, *, method: str = ..., eps: float = ..., return_info: Literal[True],
        tolerance: float = ..., max_iterations: int = ..., trace_tolerance: float | None = ...) -> FrechetResult: ...
def fid(a: StatsLike, b: StatsLike, *, method: str = "auto", eps: float = 1e-6, return_info: bool = False,
        tolerance: float = 1e-12, max_iterations: int = 100,
        trace_tolerance: float | None = None) -> float | FrechetResult:
    """FD between two sets of statistics: FeatureStats, paths to .npz files or (mu, sigma) pairs.

    The keyword arguments are :func:`frechet_distance`'s. When one side is on a device, the
    distance is computed there (the other side is copied to it; see :func:`frechet_distance` for the
    device route and ``trace_tolerance``), except when ``method`` asks for a host route ("eigh",
    "sqrtm") or, with ``method="auto"``, when a side has no more samples than dimensions: the host's
    exact route then shrinks to an n × n problem.
    """
    dims = _declared_dim(a), _declared_dim(b)  # files: from their headers, before either is read
    if None not in dims and dims[0] != dims[1]:
        raise ValueError(f"cannot compare statistics of dim {dims[0]} and {dims[1]}")
    a, b = _as_stats(a, "a"), _as_stats(b, "b")
    if a.dim != b.dim:
        raise ValueError(f"cannot compare statistics of dim {a.dim} and {b.dim}")
    check_features(a, "first")
    check_features(b, "second")
    _refuse_different_spaces(a.feature_space, b.feature_space)
    if a.feature_space and b.feature_space and a.feature_space != b.feature_space:
        # Different networks, layers or resizing give different numbers (peers' most common complaint).
        warnings.warn(f"comparing statistics of different features: {a.feature_space!r} and {b.feature_space!r}",
                      RuntimeWarning, stacklevel=2)
    on_device = next((s for s in (a, b) if s.device != "cpu"), None)
    if on_device is not None:
        singular = any(s.count is not None and s.count <= s.dim for s in (a, b))
        if method == "auto" and singular:
            method = "eigh"
        elif _resolve_method(method, on_device=True) == "newton_schulz":
            state = on_device._device_state
            result = _device_route(a.mean, a.cov, b.mean, b.cov, state.device, state.kernels, tolerance,
                                   max_iterations, trace_tolerance)
            return result if return_info else result.value
        a, b = (s if s.device == "cpu" else s.to("cpu") for s in (a, b))
    result = frechet_distance(a.mean, a.cov, b.mean, b.cov, method=method, eps=eps, return_info=True,
                              tolerance=tolerance, max_iterations=max_iterations)
    return result if return_info else result.value


# --- helpers -------------------------------------------------------------------------------------
def _mean_term(mu1: np.ndarray, mu2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖²; an overflow becomes Inf, which _finite then reports."""
    diff = mu1 - mu2
    with np.errstate(over="ignore"):
        return float(diff @ diff)


def _finite(value: float) -> float:
    """The distance, or ValueError: never a silent NaN or Inf."""
    if not math.isfinite(value):
        raise ValueError(f"the Fréchet distance is {value} in float64: the means or covariances are too large "
                         "(beyond ~1e154 for the means, ~1e308 for the traces); rescale the features")
    return value


def _resolve_method(method: str, on_device: bool = False) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "auto":
        return "newton_schulz" if on_device else "eigh"
    return method


def _check_shapes(mu1, sigma1, mu2, sigma2) -> None:
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 have different lengths: {mu1.shape[0]} and {mu2.shape[0]}")
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"{name} has shape {sigma.shape}, expected ({d}, {d}) to match the means")


def _declared_dim(x: StatsLike) -> int | None:
    """The dimension of statistics given as a file (read from its headers alone) or as FeatureStats;
    None for what _as_stats checks as it converts."""
    if isinstance(x, FeatureStats):
        return x.dim
    if isinstance(x, (str, os.PathLike)):
        from fastfid.files.stats import stats_dim
        from fastfid.references import named

        if named(x) is not None:  # a reference's name: _as_stats fetches and hashes its file once, then checks
            return None
        return stats_dim(x)
    return None


def _as_stats(x: StatsLike, name: str) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    if isinstance(x, (str, os.PathLike)):
        from fastfid.references import resolve

        return FeatureStats.load(resolve(x))  # a reference's name: its checked file
    if isinstance(x, tuple) and len(x) == 2:
        return FeatureStats.from_mean_cov(*x)
    raise TypeError(f"{name} must be FeatureStats, a path to a .npz file or a (mu, sigma) pair, got {type(x).__name__}")


def _warn_not_converged(info, tolerance) -> None:
    warnings.warn(
        f"Newton–Schulz stopped after {info['iterations']} iterations with a relative step of {info['step']:.2e} "
        f"(tolerance {tolerance:.0e}); the trace term may be inaccurate: raise max_iterations or use method='eigh'",
        RuntimeWarning, stacklevel=4)


def _device_route(mu1, sigma1, mu2, sigma2, device, kernels, tolerance, max_iterations,
                  trace_tolerance=None, prepared1=None) -> FrechetResult:
    """FD on a device: the kernels' corrected Newton–Schulz on A = Lᵀ Σ₂ L with its bound (and the
    float64 eigenvalues of A where the bound is not met), or, when kernels is None, Newton–Schulz on
    Σ₁Σ₂ in torch ops. ``prepared1``: a Reference's Σ₁, prepared once (then ``sigma1`` is its)."""
    mu1, mu2 = _device.vector_tensor(mu1, device, "mu1"), _device.vector_tensor(mu2, device, "mu2")
    sigma1 = _device.square_tensor(sigma1, device, "sigma1")
    sigma2 = _device.square_tensor(sigma2, device, "sigma2")
    _check_shapes(mu1, sigma1, mu2, sigma2)
    result = _device.frechet(mu1, sigma1, mu2, sigma2, kernels, tolerance=tolerance, max_iterations=max_iterations,
                             trace_tolerance=_device.TRACE_TOLERANCE if trace_tolerance is None else trace_tolerance,
                             prepared1=prepared1)
    if not result.converged:
        _warn_not_converged(vars(result), tolerance)
    value = _finite(result.distance)
    return FrechetResult(value=max(value, 0.0), trace_sqrt=result.trace_sqrt, mean_term=result.mean_term,
                         method="eigh" if result.exact else "newton_schulz", rank=sigma1.shape[0],
                         iterations=result.iterations, converged=result.converged, error_bound=result.bound)


def _factor(sigma: np.ndarray, name: str):
    _threads.adapt()  # before each native phase: the load may have changed since the last one
    return _core.PsdFactor(sigma, name)


def _from_lower_rank(factor1, mu1, sigma1, factor2, mu2, sigma2, method, tolerance, max_iterations) -> FrechetResult:
    """FD with the side of lower rank as the factored one. Factoring a full-rank Σ₁ beside a singular
    Σ₂ leaves d − rank(Σ₂) eigenvalues of Lᵀ Σ₂ L that are zero but for rounding, whose square roots
    (≈ 1e-8 each) add up to a visible error; the other way round the problem shrinks to the rank."""
    if factor2.rank < factor1.rank:
        return _from_factor(factor2, mu2, mu1, sigma1, method, tolerance, max_iterations)
    return _from_factor(factor1, mu1, mu2, sigma2, method, tolerance, max_iterations)


def _from_factor(factor, mu1, mu2, sigma2, method, tolerance, max_iterations) -> FrechetResult:
    """FD from the factor of Σ₁ and a Σ₂ that validate_covariance has accepted."""
    _threads.adapt()
    info = _core.trace_sqrt_product(factor, sigma2, method=method, tolerance=tolerance, max_iterations=max_iterations)
    mean_term = _mean_term(mu1, mu2)
    trace_sqrt = info["trace_sqrt"]
    if not info["converged"]:
        _warn_not_converged(info, tolerance)
    value = _finite(mean_term + factor.trace + float(np.trace(sigma2)) - 2.0 * trace_sqrt)
    return FrechetResult(
        value=max(value, 0.0), trace_sqrt=trace_sqrt, mean_term=mean_term, method=method, rank=factor.rank,
        iterations=info["iterations"], clamped=info["clamped"], most_negative=info["most_negative"],
        converged=info["converged"],
    )


def _sqrtm_route(mu1, sigma1, mu2, sigma2, eps) -> FrechetResult:
    """pytorch-fid's computation, with sqrtm called as the installed SciPy expects (no ``disp``)."""
    try:
        from scipy import linalg
    except ImportError as error:
        raise ImportError("method='sqrtm' is the scipy reference and needs scipy: pip install scipy") from error
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(sigma).all():
            raise ValueError(f"{name} contains NaN or Inf values")
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm left an imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    mean_term = _mean_term(mu1, mu2)
    trace_sqrt = float(np.trace(covmean))
    value = _finite(mean_term + float(np.trace(sigma1)) + float(np.trace(sigma2)) - 2.0 * trace_sqrt)
    return FrechetResult(value=max(value, 0.0), trace_sqrt=trace_sqrt, mean_term=mean_term, method="sqrtm",
                         rank=sigma1.shape[0])

"""The Fréchet distance on a torch device: the kernels' symmetric route (scaled Newton–Schulz on
A = Lᵀ S₂ L, corrected and certified by a bound, else the float64 eigenvalues of A), the coupled
iteration on Σ₁Σ₂ for FD gradients, and the same in torch ops after the device gave up."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastfid._device import routes, validation
from fastfid._device.routing import STATUS, DeviceKernels, attempt, torch_module
from fastfid._device.routing import workspace as scratch
from fastfid._native import cuda as _cuda

TRACE_TOLERANCE = 1e-8
"""The device route's default tolerance: the bound on the FD's error must be ≤ this × (tr Σ₁ + tr Σ₂),
else the exact route (float64 eigenvalues) gives the number."""


@dataclass(frozen=True)
class DeviceFrechet:
    """FD by Newton–Schulz on M = Σ₁Σ₂, with on request √M and M^−½ (tensors on the device)."""

    distance: float
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √M, unclamped (0 mean term when the means were not given)."""
    trace_sqrt: float
    mean_term: float
    iterations: int
    step: float
    """‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F that led to the returned iterate (the stopping test)."""
    converged: bool
    sqrt: Any = None
    inverse_sqrt: Any = None
    bound: float = 0.0
    """A bound on |the distance's error| from the corrected iteration (0: the exact route)."""
    exact: bool = False
    """True when the float64 eigenvalues gave the trace term."""


def square_tensor(x, device, name: str):
    """A float64, C-contiguous (d, d) tensor on `device` (its values are checked where it is used)."""
    torch = torch_module()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) covariance matrix, got shape {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=torch.float64).contiguous()


def vector_tensor(x, device, name: str):
    torch = torch_module()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    x = torch.atleast_1d(x.detach()).to(device=device, dtype=torch.float64).contiguous()
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D mean vector, got shape {tuple(x.shape)}")
    return x


def _covariance_problem(name: str, nonfinite: float, asymmetry: float, largest: float, smallest: float) -> str | None:
    """The CPU core's checks of a covariance (trace_sqrt.cpp), from its summary numbers."""
    if nonfinite:
        return f"{name} contains NaN or Inf values"
    if asymmetry > 1e-5 * max(largest, 1e-300):
        return f"{name} is not symmetric: |S - S^T| reaches {asymmetry:.3g} against a largest variance of {largest:.3g}"
    if smallest < 0:
        return f"{name} has a negative variance on its diagonal: it is not a covariance"
    return None


def check_covariance(sigma, name: str) -> None:
    """The CPU core's checks of a covariance on its device (a few reductions and one sync)."""
    torch = torch_module()
    finite = bool(torch.isfinite(sigma).all())
    diagonal = sigma.diagonal()
    problem = _covariance_problem(
        name, not finite, float((sigma - sigma.T).abs().max()) if finite else 0.0,
        float(diagonal.abs().max()) if finite else 0.0, float(diagonal.min()) if finite else 0.0)
    if problem:
        raise ValueError(problem)


@dataclass
class PreparedCovariance:
    """A covariance made ready for the symmetric route on its device: divided by a power of two near
    its largest variance (exact: no overflow or underflow anywhere in float64's range), and that
    quotient's lower Cholesky factor with torch's info (≠ 0: none), unless it was not asked for."""

    unit: Any  # 0-d tensor
    scaled: Any
    factor: Any = None
    info: Any = None

    @classmethod
    def of(cls, sigma, *, factor: bool = True) -> "PreparedCovariance":
        torch = torch_module()
        largest = sigma.diagonal().abs().amax()
        exponent = torch.frexp(largest).exponent
        usable = torch.isfinite(largest) & (largest > 0)
        unit = torch.where(usable, torch.ldexp(torch.ones_like(largest), exponent - 1), torch.ones_like(largest))
        prepared = cls(unit, (sigma / unit).contiguous())
        if factor:
            lower, info = torch.linalg.cholesky_ex(prepared.scaled)  # without waiting for the device
            prepared.factor, prepared.info = lower.contiguous(), info.contiguous()
        return prepared

    def has_factor(self) -> bool:
        """Whether the Cholesky factor exists (reads the info: a sync)."""
        return self.info is not None and int(self.info) == 0


def frechet(mu1, sigma1, mu2, sigma2, kernels: DeviceKernels | None, *, tolerance: float = 1e-12,
            max_iterations: int = 100, return_roots: bool = False,
            trace_tolerance: float = TRACE_TOLERANCE, prepared1: PreparedCovariance | None = None) -> DeviceFrechet:
    """FD on the covariances' device (float64 tensors from square_tensor / vector_tensor; the means
    may be None) by fastfid's kernels, or by torch ops.

    The kernels' FD is the symmetric route: scaled Newton–Schulz on A = Lᵀ S₂ L, a float64 correction
    and a bound on the result's error, with one read of the result at the end; where the bound exceeds
    ``trace_tolerance`` × (tr Σ₁ + tr Σ₂) (or neither covariance has a Cholesky factor), the float64
    eigenvalues of A on the device. ``prepared1``: Σ₁ already prepared (a Reference's, with a factor
    known to exist), reused. With ``return_roots`` (FD gradients), coupled Newton–Schulz on Σ₁Σ₂ to
    the relative step ``tolerance``, which also gives (Σ₁Σ₂)^±½."""
    torch = torch_module()
    if not (isinstance(max_iterations, int) and max_iterations >= 0):
        raise ValueError(f"max_iterations must be a non-negative integer, got {max_iterations!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    d, device = sigma1.shape[0], sigma1.device
    roots = [torch.empty(d, d, dtype=torch.float64, device=device) for _ in range(2)] if return_roots else []
    if not trace_tolerance > 0:
        raise ValueError(f"trace_tolerance must be positive, got {trace_tolerance!r}")
    if kernels is not None and not kernels.trusts("fd:coupled" if roots else "fd:symmetric"):
        # This device failed the route's validation: torch's float64 ops give the number.
        return frechet_with_torch(mu1, sigma1, mu2, sigma2, tolerance, max_iterations, roots) if roots \
            else exact_with_torch(mu1, sigma1, mu2, sigma2)
    if kernels is not None and not roots and routes.chooses(kernels):
        calls = route_calls(kernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance, prepared1)
        route = routes.known(kernels, d)
        if route is None and validation.enabled():
            return routes.trial(kernels, device, d, calls)[1]
        route = route or routes.prior(kernels)
        if route != "newton_schulz":
            return calls[route]()
    if kernels is not None:
        results: list[DeviceFrechet] = []  # empty when there was no memory for the workspace

        def native():
            if roots:
                workspace = scratch(kernels, _cuda.frechet_workspace_doubles(d), device)
                if workspace is not None:
                    results.append(_from_record(kernels.frechet_distance(mu1, sigma1, mu2, sigma2, workspace, roots,
                                                                         tolerance, max_iterations), roots))
            else:
                result = _symmetric_route(kernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance,
                                          prepared1)
                results.extend([result] if result is not None else [])

        if attempt(kernels, device, "frechet_distance", native) and results:
            return results[0]
    return frechet_with_torch(mu1, sigma1, mu2, sigma2, tolerance, max_iterations, roots)


@dataclass
class SymmetricRun:
    """One run of the kernels' symmetric route: its result record, and what the exact route reads
    after it (A in the workspace, the prepared sides)."""

    record: dict
    workspace: Any
    first: PreparedCovariance
    second: PreparedCovariance
    units: Any  # the pair of units, a tensor


def run_symmetric(kernels: DeviceKernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance,
                  prepared1: PreparedCovariance | None = None, workspace=None) -> SymmetricRun | None:
    """The kernels' symmetric route (None: no memory for it). Each covariance is divided by a power of
    two near its largest variance and factored by torch's Cholesky (cuSOLVER on a GPU), without
    waiting: the kernels pick a side that has a factor. A prepared Σ₁ with a factor spares Σ₂'s.
    ``workspace``: the scratch to use (the validation's, filled with NaN), else one from torch."""
    torch = torch_module()
    d, device = sigma1.shape[0], sigma1.device
    if workspace is None:
        workspace = scratch(kernels, _cuda.symmetric_workspace_doubles(d), device)
    if workspace is None:
        return None
    first = prepared1 if prepared1 is not None else PreparedCovariance.of(sigma1)
    second = PreparedCovariance.of(sigma2, factor=prepared1 is None)
    # Without its own factor, side 2 names side 1's: the kernels take side 1's (info 0), never side 2's.
    factor2, info2 = (second.factor, second.info) if second.factor is not None else (first.factor, first.info)
    unit_pair = torch.stack([first.unit, second.unit]).contiguous()
    record = kernels.backend.frechet_symmetric(
        0 if mu1 is None else mu1.data_ptr(), sigma1.data_ptr(), 0 if mu2 is None else mu2.data_ptr(),
        sigma2.data_ptr(), scaled1=first.scaled.data_ptr(), scaled2=second.scaled.data_ptr(),
        factor1=first.factor.data_ptr(), factor2=factor2.data_ptr(), info1=first.info.data_ptr(),
        info2=info2.data_ptr(), units=unit_pair.data_ptr(), dim=d, workspace=workspace.data_ptr(),
        tolerance=trace_tolerance, max_iterations=max_iterations, tensor_cores=kernels.tensor_cores,
        tf32x3=kernels.tf32x3, device=kernels.index, stream=kernels.stream())
    return SymmetricRun(record, workspace, first, second, unit_pair)


def route_calls(kernels: DeviceKernels, mu1, sigma1, mu2, sigma2, max_iterations: int = 100,
                trace_tolerance: float = TRACE_TOLERANCE, prepared1: PreparedCovariance | None = None) -> dict:
    """routes.ROUTES as calls on these inputs, each giving a DeviceFrechet (routes.trial times them)."""
    def newton_schulz():
        # None (no memory for the workspace, or the driver refused: then warned) leaves it to eigvalsh.
        result: list = []
        attempt(kernels, sigma1.device, "frechet_distance", lambda: result.append(_symmetric_route(
            kernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance, prepared1)))
        return result[0] if result and result[0] is not None else exact_with_torch(mu1, sigma1, mu2, sigma2)

    return {"newton_schulz": newton_schulz, "eigvalsh": lambda: exact_with_torch(mu1, sigma1, mu2, sigma2),
            "host": lambda: exact_on_host(mu1, sigma1, mu2, sigma2)}


def exact_on_host(mu1, sigma1, mu2, sigma2) -> DeviceFrechet:
    """The covariances copied to the host and the CPU core's exact route (LAPACK)."""
    from fastfid.distance import frechet_distance

    sigmas = [sigma1.cpu().numpy(), sigma2.cpu().numpy()]
    means = [np.zeros(sigmas[0].shape[0])] * 2 if mu1 is None else [mu1.cpu().numpy(), mu2.cpu().numpy()]
    info = frechet_distance(means[0], sigmas[0], means[1], sigmas[1], method="eigh", return_info=True)
    traces = float(sigmas[0].trace() + sigmas[1].trace())
    distance = info.mean_term + traces - 2.0 * info.trace_sqrt
    return DeviceFrechet(distance, info.trace_sqrt, info.mean_term, 0, 0.0, True, exact=True)


def _symmetric_route(kernels: DeviceKernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance,
                     prepared1: PreparedCovariance | None = None) -> DeviceFrechet | None:
    """The kernels' symmetric route, with the exact route where its bound is not met (None: no memory)."""
    run = run_symmetric(kernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance, prepared1)
    if run is None:
        return None
    record = run.record
    if record["status"] not in (STATUS["needs_exact"], STATUS["no_factor"]):
        return _from_record(record, [])
    # The exact route: the eigenvalues of A (left in the workspace), or, with no factor on either
    # side, of S₁^½ S₂ S₁^½ from the eigen decomposition of S₁.
    d = sigma1.shape[0]
    if record["status"] == STATUS["needs_exact"]:
        offset = _cuda.symmetric_matrix_offset
        a = run.workspace[offset:offset + d * d].view(d, d)
    else:
        a = _root_product(run.first.scaled, run.second.scaled)
    trace_sqrt = _trace_sqrt_of(a, run.units)
    distance = record["mean_term"] + record["trace1"] + record["trace2"] - 2.0 * trace_sqrt
    return DeviceFrechet(distance, trace_sqrt, record["mean_term"], record["iterations"], _step(record), True,
                         exact=True)


def _root_product(scaled1, scaled2):
    """S₁^½ S₂ S₁^½ from the eigen decomposition of S₁ (symmetrised): A where S₁ has no Cholesky factor."""
    torch = torch_module()
    values, vectors = torch.linalg.eigh(scaled1)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    a = root @ scaled2 @ root
    return 0.5 * (a + a.T)


def _trace_sqrt_of(a, units) -> float:
    """tr √(Σ₁Σ₂) from A's float64 eigenvalues and the sides' units."""
    torch = torch_module()
    u1, u2 = units.tolist()
    return float(torch.linalg.eigvalsh(a).clamp(min=0).sqrt().sum()) * math.sqrt(u1) * math.sqrt(u2)


def checked_mean_term(mu1, sigma1, mu2, sigma2) -> float:
    """The CPU core's checks of both covariances and the means, on their device, and ‖μ₁ − μ₂‖²
    (0 without means): what the torch routes do before their own work."""
    torch = torch_module()
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        check_covariance(sigma, name)
    if mu1 is None:
        return 0.0
    if not bool(torch.isfinite(mu1).all() & torch.isfinite(mu2).all()):
        raise ValueError("the means contain NaN or Inf values")
    diff = mu1 - mu2
    return float(diff @ diff)


def exact_with_torch(mu1, sigma1, mu2, sigma2) -> DeviceFrechet:
    """The exact route in torch float64 ops on the covariances' device: Cholesky of a scaled Σ₁ (else
    its eigen decomposition), A = Lᵀ S₂ L and A's eigenvalues. Where the kernels' symmetric route is
    not trusted on a device, or measured slower there."""
    torch = torch_module()
    mean_term = checked_mean_term(mu1, sigma1, mu2, sigma2)
    first, second = PreparedCovariance.of(sigma1), PreparedCovariance.of(sigma2, factor=False)
    if first.has_factor():
        a = first.factor.T @ second.scaled @ first.factor
        a = 0.5 * (a + a.T)
    else:
        a = _root_product(first.scaled, second.scaled)
    trace_sqrt = _trace_sqrt_of(a, torch.stack([first.unit, second.unit]))
    distance = mean_term + float(sigma1.trace()) + float(sigma2.trace()) - 2.0 * trace_sqrt
    return DeviceFrechet(distance, trace_sqrt, mean_term, 0, 0.0, True, exact=True)


def _step(record: dict) -> float:
    return record["step"] if record["step"] < 1.7976931348623157e308 else math.inf


def _from_record(record: dict, roots: list) -> DeviceFrechet:
    if record["status"] == STATUS["invalid_input"]:
        for side in ("1", "2"):
            problem = _covariance_problem(f"sigma{side}", record["nonfinite" + side], record["asymmetry" + side],
                                          record["largest_variance" + side], record["smallest_variance" + side])
            if problem:
                raise ValueError(problem)
        raise ValueError("the means contain NaN or Inf values")
    if record["status"] == STATUS["product_not_finite"]:
        raise ValueError("sigma1 @ sigma2 is not finite")
    if record["status"] == STATUS["product_zero"] and roots:
        raise ValueError("sigma1 @ sigma2 is 0: it has no inverse square root")
    sqrt, inverse_sqrt = roots or (None, None)
    return DeviceFrechet(record["distance"], record["trace_sqrt"], record["mean_term"], record["iterations"],
                         _step(record), record["converged"], sqrt, inverse_sqrt, bound=record["bound"])


def _unit(largest: float) -> float:
    """The power of two at or below `largest` (1 for 0): fd_begin's choice in frechet_kernels.cuh."""
    return math.ldexp(1.0, math.frexp(largest)[1] - 1) if largest > 0 else 1.0


def frechet_with_torch(mu1, sigma1, mu2, sigma2, tolerance, max_iterations, roots) -> DeviceFrechet:
    """frechet_kernels.cuh in torch ops: the same checks, iteration, stopping rule and outputs."""
    torch = torch_module()
    mean_term = checked_mean_term(mu1, sigma1, mu2, sigma2)
    traces = float(sigma1.trace()) + float(sigma2.trace())
    d = sigma1.shape[0]
    # The kernels' units: powers of two near each largest variance, so that the product neither
    # overflows nor underflows anywhere in float64's range (exact scalings).
    units = [_unit(float(sigma.diagonal().abs().max())) for sigma in (sigma1, sigma2)]
    m = (sigma1 / units[0]) @ (sigma2 / units[1])
    scale = float(torch.linalg.matrix_norm(m))
    if not math.isfinite(scale):
        raise ValueError("sigma1 @ sigma2 is not finite")
    if scale == 0:
        if roots:
            raise ValueError("sigma1 @ sigma2 is 0: it has no inverse square root")
        return DeviceFrechet(mean_term + traces, 0.0, mean_term, 0, 0.0, True)
    eye = torch.eye(d, dtype=torch.float64, device=m.device)
    y, z = m / scale, eye.clone()
    best_y, best_z, best_step = y, z, math.inf
    converged, iterations = False, 0
    for iteration in range(1, max_iterations + 1):
        iterations = iteration
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z, previous = y @ t, t @ z, y
        step = float(torch.linalg.matrix_norm(y - previous) / torch.linalg.matrix_norm(previous))
        if not math.isfinite(step):
            break
        if step <= best_step:
            best_y, best_z, best_step = y, z, step
        elif step > 1e3 * best_step:
            break
        if step <= tolerance:
            converged = True
            break
    root_scale = math.sqrt(units[0]) * math.sqrt(units[1]) * math.sqrt(scale)
    if roots:
        roots[0].copy_(best_y * root_scale)
        roots[1].copy_(best_z / root_scale)
    trace_sqrt = root_scale * max(float(best_y.diagonal().sum()), 0.0)
    return DeviceFrechet(mean_term + traces - 2.0 * trace_sqrt, trace_sqrt, mean_term, iterations, best_step,
                         converged, *(roots or (None, None)))


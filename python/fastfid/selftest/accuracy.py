"""The device route's accuracy, case by case: the route taken, the Newton–Schulz iterations, the
bound the route certified and the true error of the FD against the CPU core's exact route, on a
device (a GPU, or the emulated driver of a given architecture: sm_90 has float64 products on the
FP64 tensor cores, sm_89 3×TF32 Newton–Schulz products). ``fastfid selftest`` reports it, at d = 256
on a GPU; the README's tables come from it.
"""

from __future__ import annotations

import numpy as np

from fastfid import _device
from fastfid._device import TRACE_TOLERANCE


def relu_covariance(rng, n, d, offset=0.5):
    """Inception-like features: a Gaussian with geometric variances, rotated, shifted, rectified."""
    z = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / max(d / 8, 1.0))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = np.maximum(z @ q + offset, 0)
    return x.mean(0), np.cov(x, rowvar=False)


def with_spectrum(rng, values):
    q, _ = np.linalg.qr(rng.standard_normal((len(values), len(values))))
    return (q * values) @ q.T


def cases(d: int, seed: int = 20261202):
    rng = np.random.default_rng(seed)
    mu1, s1 = relu_covariance(rng, 4 * d, d, 0.5)
    mu2, s2 = relu_covariance(rng, 4 * d, d, 0.8)
    _, rank_deficient = relu_covariance(rng, d // 2, d, 0.5)
    yield "Inception-like ReLU features (n = 4d per side)", (mu1, s1, mu2, s2)
    yield f"n < d: Σ₁ from {d // 2} samples (rank {d // 2 - 1})", (mu1, rank_deficient, mu2, s2)
    conditioned = with_spectrum(rng, np.geomspace(1.0, 1e-12, d))
    yield "κ(Σ₁) = 1e12", (mu1, conditioned, mu2, s2)
    yield "scale 1e-200 (Σ × 1e-200, μ × 1e-100)", (mu1 * 1e-100, s1 * 1e-200, mu2 * 1e-100, s2 * 1e-200)
    yield "scale 1e200 (Σ × 1e200, μ × 1e100)", (mu1 * 1e100, s1 * 1e200, mu2 * 1e100, s2 * 1e200)
    yield "identical sides", (mu1, s1, mu1, s1)
    singular = with_spectrum(rng, np.concatenate([np.geomspace(1.0, 1e-3, d // 2), np.zeros(d - d // 2)]))
    yield "Σ₁ singular (rank d/2), Σ₂ full", (mu1, singular, mu2, s2)
    yield "Σ₁ full, Σ₂ singular (rank d/2)", (mu1, s1, mu2, singular)


def study(d: int, device) -> list[dict]:
    """One row per case of ``cases(d)`` on ``device`` (a CUDA device, or the CPU under emulation)."""
    import torch

    import fastfid
    from fastfid.distance import _device_route

    rows = []
    kernels = _device.kernels_for(device)
    for name, (mu1, s1, mu2, s2) in cases(d):
        exact = fastfid.frechet_distance(mu1, s1, mu2, s2, return_info=True)
        t_mu1, t_s1, t_mu2, t_s2 = (torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in (mu1, s1, mu2, s2))
        result = _device_route(t_mu1, t_s1, t_mu2, t_s2, device, kernels, 1e-12, 100)
        scale = np.trace(s1) + np.trace(s2)
        rows.append({"case": name, "route": result.method, "iterations": result.iterations,
                     "bound": result.error_bound, "error": abs(result.value - exact.value),
                     "tolerance": TRACE_TOLERANCE * scale, "fd": exact.value, "scale": scale})
    return rows


def wrong(rows: list[dict]) -> list[str]:
    """The cases outside the tolerance, or (corrected route) outside the bound they certified."""
    def within(row) -> bool:
        return row["error"] <= row["tolerance"] and (row["route"] != "newton_schulz" or row["error"] <= row["bound"])

    return [row["case"] for row in rows if not within(row)]


def markdown(rows: list[dict], d: int, where: str) -> str:
    lines = [f"| case (d = {d}, {where}) | route | iterations | certified bound | true error | "
             "tolerance 1e-8·(tr Σ₁ + tr Σ₂) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        route = {"newton_schulz": "corrected Newton–Schulz", "eigh": "float64 eigenvalues"}[row["route"]]
        bound = f"{row['bound']:.1e}" if row["route"] == "newton_schulz" else "—"
        lines.append(f"| {row['case']} | {route} | {row['iterations']} | {bound} | {row['error']:.1e} | "
                     f"{row['tolerance']:.1e} |")
    return "\n".join(lines) + "\n"

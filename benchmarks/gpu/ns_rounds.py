"""Would a measured lower end of A's spectrum save Newton–Schulz rounds? A float64 numpy model of the
kernels' scaled iteration (frechet_kernels.cuh: Y₀ = A/‖A‖_F, Z₀ = I, Chen–Chow's coefficients
from a lower end l of the sign iteration's interval and its scalar recurrence, the stopping rule at
a step of 1e-6 with the stall rule) counts the rounds from today's l = 1e-4 and from l estimated by
a few Lanczos steps on A (GEMVs), and from A's true smallest eigenvalue (the best any estimate
could do), on the accuracy study's cases and on ReLU statistics at d = 2048.
It also gives the corrected trace's error (tr X + ½ tr(Z_A R), as the kernels correct it) of each,
so that fewer rounds are not bought with accuracy. Prints a Markdown table.

Run: python benchmarks/gpu/ns_rounds.py [--dim 256] [--big 2048] [--lanczos 20]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from fastfid.selftest.accuracy import cases, relu_covariance

STEP, STALL_FROM, STALL_ROUNDS, LOWER_BOUND = 1e-6, 1e-3, 3, 1e-4  # frechet_driver.hpp, frechet_kernels.cuh


def symmetric_a(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """A = Lᵀ S₂ L of the scaled sides (S₁ = L Lᵀ, or the eigen square root where it has no factor)."""
    u1, u2 = (2.0 ** (math.frexp(np.abs(np.diag(s)).max())[1] - 1) for s in (s1, s2))
    try:
        lower = np.linalg.cholesky(s1 / u1)
        a = lower.T @ (s2 / u2) @ lower
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(s1 / u1)
        root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        a = root @ (s2 / u2) @ root
    return 0.5 * (a + a.T)


def iterate(a: np.ndarray, lower: float, max_rounds: int = 100) -> tuple[int, float]:
    """The kernels' rounds from lower end `lower`, and the corrected trace's relative error."""
    d = a.shape[0]
    c = np.linalg.norm(a)
    y, z, eye = a / c, np.eye(d), np.eye(d)
    best = (math.inf, y, z)
    stalled, rounds = 0, 0
    while rounds < max_rounds:
        rounds += 1
        alpha = math.sqrt(3.0 / (1.0 + lower + lower * lower))
        t = 1.5 * alpha * eye - 0.5 * alpha ** 3 * (z @ y)
        y_next, z = y @ t, t @ z
        step = np.linalg.norm(y_next - y) / np.linalg.norm(y)
        y = y_next
        improved = step <= best[0]
        if improved:
            best = (step, y, z)
        stalled = 0 if improved or best[0] > STALL_FROM else stalled + 1
        lower = alpha * lower
        lower = 0.5 * lower * (3.0 - lower * lower)
        if not math.isfinite(step) or step <= STEP or stalled >= STALL_ROUNDS or step > 1e3 * best[0]:
            break
    _, y, z = best
    x, z_a = math.sqrt(c) * y, z / math.sqrt(c)
    corrected = np.trace(x) + 0.5 * np.trace(z_a @ (a - x @ x))
    exact = np.sqrt(np.clip(np.linalg.eigvalsh(a), 0, None)).sum()
    return rounds, abs(corrected - exact) / exact


def lanczos_smallest(a: np.ndarray, steps: int, seed: int = 0) -> float:
    """The smallest Ritz value of `steps` Lanczos steps on A (full reorthogonalisation): ≥ λ_min(A)."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(a.shape[0])
    basis = [q / np.linalg.norm(q)]
    alphas, betas = [], []
    for k in range(steps):
        w = a @ basis[k]
        alphas.append(basis[k] @ w)
        for v in basis:
            w -= (v @ w) * v
        beta = np.linalg.norm(w)
        if k == steps - 1 or beta < 1e-14 * abs(alphas[0]):
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    tridiagonal = np.diag(alphas) + np.diag(betas[:m - 1], 1) + np.diag(betas[:m - 1], -1)
    return float(np.linalg.eigvalsh(tridiagonal)[0])


def measured_lower(a: np.ndarray, steps: int) -> float:
    """l from the Ritz estimate: √(θ_min / (2‖A‖_F)) (a margin of 2 below the estimate, which is an
    upper bound of λ_min), never below today's 1e-4."""
    theta = max(lanczos_smallest(a, steps), 0.0)
    return max(LOWER_BOUND, math.sqrt(theta / (2.0 * np.linalg.norm(a))))


def study(dim: int, big: int, steps: int) -> list[dict]:
    rows = []
    problems = [(f"{name} (d = {dim})", s1, s2) for name, (_, s1, _, s2) in cases(dim)
                if "scale" not in name]  # the scaled cases are the first one's A exactly
    if big:
        rng = np.random.default_rng(20261207)
        _, s1 = relu_covariance(rng, 4 * big, big, 0.5)
        _, s2 = relu_covariance(rng, 4 * big, big, 0.8)
        problems.append((f"ReLU statistics, n = 4d (d = {big})", s1, s2))
    for name, s1, s2 in problems:
        a = symmetric_a(s1, s2)
        lower = measured_lower(a, steps)
        # The best any estimate could do: l from A's true smallest eigenvalue (floored at 1e-8).
        true_lower = max(1e-8, math.sqrt(max(np.linalg.eigvalsh(a)[0], 0.0) / np.linalg.norm(a)))
        before, after, oracle = iterate(a, LOWER_BOUND), iterate(a, lower), iterate(a, true_lower)
        rows.append({"case": name, "l": lower, "true_l": true_lower, "rounds_before": before[0],
                     "rounds_after": after[0], "rounds_oracle": oracle[0], "error_before": before[1],
                     "error_after": after[1]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--big", type=int, default=2048, help="d of the ReLU statistics (0: none)")
    parser.add_argument("--lanczos", type=int, default=20, help="Lanczos steps (GEMVs) for λ_min")
    args = parser.parse_args(argv)
    print(f"| case | l from {args.lanczos} Lanczos steps | true l | rounds, l = 1e-4 (today) | "
          "rounds, Lanczos l | rounds, true l | corrected trace's error, today | Lanczos l |")
    print("|---|---|---|---|---|---|---|---|")
    for row in study(args.dim, args.big, args.lanczos):
        print(f"| {row['case']} | {row['l']:.2e} | {row['true_l']:.1e} | {row['rounds_before']} | "
              f"{row['rounds_after']} | {row['rounds_oracle']} | {row['error_before']:.1e} | "
              f"{row['error_after']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

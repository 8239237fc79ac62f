"""The device path beside its torch references, in one run, each case checked against an
independent float64 answer (``fastfid selftest --benchmark``): statistics of 50,000 × 2048 in three
input types, the FD at d = 2048 and 4096 by every route, and the FD loss.

On a GPU it times with CUDA events (median of ``rounds`` after a warm-up). Under the emulation it
runs every case at small sizes and checks the numbers without timing them.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np
import torch

import fastfid
from fastfid import _device

GPU_SIZES: dict[str, Any] = {"n": 50_000, "d": 2048, "batch": 256, "fd": (2048, 4096), "population": 50_000}
EMULATED_SIZES: dict[str, Any] = {"n": 600, "d": 40, "batch": 256, "fd": (24, 40), "population": 300}
STATS_RTOL = 1e-10  # float64 accumulation in two orders: ~n·eps at worst (50,000 · 1.1e-16 = 6e-12)
FD_RTOL = 1e-6  # every route against the CPU's exact one: the loosest route here (float64 eigvals) is ~1e-10


class Timer:
    def __init__(self, device, rounds: int):
        self.device, self.rounds = device, rounds
        self.gpu = device.type == "cuda"

    def __call__(self, work) -> float | None:
        """Median ms of `work()` (None under emulation: nothing there is worth timing)."""
        if not self.gpu:
            work()
            return None
        work()  # warm-up: allocator, module load, cuBLAS handles
        torch.cuda.synchronize()
        times = []
        started = time.perf_counter()
        for _ in range(self.rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
            if time.perf_counter() - started > 20:  # slow references: fewer rounds
                break
        return statistics.median(times)


def relu_features(generator, n, d, device, dtype=torch.float64):
    """Inception-like features: a Gaussian with geometric variances, rotated, shifted and rectified."""
    z = torch.randn(n, d, generator=generator, dtype=torch.float64, device="cpu")
    z *= torch.exp(-torch.arange(d, dtype=torch.float64) / max(d / 8, 1.0))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return torch.clamp(z @ q + 0.3, min=0).to(device=device, dtype=dtype)


def close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * abs(b)


# --- statistics -----------------------------------------------------------------------------------
def bench_statistics(timer, device, n, d, batch, generator) -> list[dict]:
    rows = []
    features = relu_features(generator, n, d, device, torch.float32)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = features.to(dtype)
        exact = x.double()
        reference_cov = torch.cov(exact.T).cpu().numpy()

        def ours(precision="float64"):
            stats = fastfid.FeatureStats(d, device=device, precision=precision)
            for part in torch.split(x, batch):
                stats.update(part)
            return stats

        def gemm_float64():  # the floor of an exact route: one float64 Gram matrix of all features
            centred = x.double()
            return centred.T @ centred

        def torchmetrics_sums():  # torchmetrics' update: float64 Σx and Σxxᵀ per batch
            total, outer = torch.zeros(d, dtype=torch.float64, device=device), torch.zeros(d, d, dtype=torch.float64,
                                                                                          device=device)
            for part in torch.split(x, batch):
                part = part.double()
                total += part.sum(0)
                outer += part.T @ part
            return total, outer

        def error_of(stats) -> float:
            return float(np.abs(stats.cov.cpu().numpy() - reference_cov).max() / np.abs(reference_cov).max())

        # The fast mode's bound is per entry (README); over the largest entry it is far below 1e-3
        # (TF32) and 1e-4 (split-bf16) on such features.
        correct = {"float64": error_of(ours()) <= STATS_RTOL,
                   "fast": error_of(ours("fast")) <= (1e-4 if dtype != torch.float32 else 1e-3)}
        dtype_name = str(dtype).removeprefix("torch.")
        for name, work, check in (("fastfid FeatureStats.update", lambda: ours().count, correct["float64"]),
                                  ("fastfid precision='fast'", lambda: ours("fast").count, correct["fast"]),
                                  ("float64 X.T @ X (all features at once)", gemm_float64, None),
                                  ("torchmetrics' float64 sums", torchmetrics_sums, None)):
            rows.append({"group": f"statistics {n} × {d} {dtype_name}, batches of {batch}", "case": name,
                         "ms": timer(work), "correct": check})
    return rows


# --- distances -------------------------------------------------------------------------------------
def feature_pair(generator, d, device):
    return relu_features(generator, 2 * d, d, device), relu_features(generator, 2 * d, d, device) * 1.1


def bench_distance(timer, device, d, generator) -> list[dict]:
    x, y = feature_pair(generator, d, device)
    mu1, s1, mu2, s2 = x.mean(0), torch.cov(x.T).contiguous(), y.mean(0), torch.cov(y.T).contiguous()
    exact = fastfid.frechet_distance(*(t.cpu().numpy() for t in (mu1, s1, mu2, s2)))
    mean_term = float(((mu1 - mu2) ** 2).sum())
    traces = float(s1.trace() + s2.trace())

    def eigvals_route():  # torchmetrics / torch-fidelity: complex eigenvalues of Σ₁Σ₂
        return mean_term + traces - 2 * float(torch.linalg.eigvals(s1 @ s2).sqrt().real.sum())

    def eigvalsh_route():  # the symmetric route in torch: Cholesky, congruence, eigvalsh
        factor = torch.linalg.cholesky(s1)
        values = torch.linalg.eigvalsh(factor.T @ s2 @ factor)
        return mean_term + traces - 2 * float(values.clamp(min=0).sqrt().sum())

    def torch_newton_schulz():  # fastfid's torch route: the same iteration in torch float64 ops
        return _device.frechet_with_torch(mu1, s1, mu2, s2, 1e-12, 100, []).distance

    rows = []
    for name, work in (("fastfid frechet_distance (kernels)", lambda: fastfid.frechet_distance(mu1, s1, mu2, s2)),
                       ("torch eigvals of Σ₁Σ₂ (torchmetrics)", eigvals_route),
                       ("torch Cholesky + eigvalsh", eigvalsh_route),
                       ("torch float64 Newton–Schulz", torch_newton_schulz)):
        value = work()
        rows.append({"group": f"FD at d = {d}", "case": name, "ms": timer(work),
                     "correct": close(value, exact, FD_RTOL), "value": value, "exact": exact})
    # A reference prepared once on the device, against device statistics of the other side.
    reference = fastfid.Reference((mu1.cpu().numpy(), s1.cpu().numpy()), device=device)
    other = fastfid.FeatureStats.from_features(y)
    value = reference.distance(other)
    rows.append({"group": f"FD at d = {d}", "case": "fastfid Reference.distance (factor kept on the device)",
                 "ms": timer(lambda: reference.distance(other)), "correct": close(value, exact, FD_RTOL),
                 "value": value, "exact": exact})
    return rows


# --- the loss ---------------------------------------------------------------------------------------
def bench_loss(timer, device, population, d, batch, generator) -> list[dict]:
    from fastfid.loss import FrechetLoss

    reference = fastfid.FeatureStats.from_features(relu_features(generator, 4 * d, d, "cpu").numpy())
    criterion = FrechetLoss(reference, population=population)
    criterion.fill(relu_features(generator, population, d, device, torch.float32))
    z = relu_features(generator, batch, d, device, torch.float32).requires_grad_(True)

    def step():
        value = criterion(z)
        value.backward()
        return float(value.detach())

    value = step()
    return [{"group": f"FrechetLoss, population {population}, d = {d}, batch {batch}", "case": "forward + backward",
             "ms": timer(step), "correct": math.isfinite(value) and z.grad is not None and
             bool(torch.isfinite(z.grad).all())}]


# --- report -----------------------------------------------------------------------------------------
def markdown(rows: list[dict], header: str) -> str:
    lines = [header, ""]
    for group in dict.fromkeys(row["group"] for row in rows):
        members = [row for row in rows if row["group"] == group]
        first = members[0]["ms"]
        lines += ["", f"| {group} | median ms | against fastfid | correct |", "|---|---|---|---|"]
        for row in members:
            ms = "—" if row["ms"] is None else f"{row['ms']:.3f}"
            ratio = "—" if row["ms"] is None or first is None else f"{row['ms'] / first:.2f}×"
            correct = {True: "yes", False: "**NO**", None: "(reference)"}[row["correct"]]
            lines.append(f"| {row['case']} | {ms} | {ratio} | {correct} |")
    return "\n".join(lines) + "\n"


def run(device, *, emulated: bool, rounds: int = 10, seed: int = 20261202) -> list[dict]:
    """Every group's rows on ``device`` at the GPU's sizes, or the emulation's."""
    sizes = EMULATED_SIZES if emulated else GPU_SIZES
    generator = torch.Generator().manual_seed(seed)
    timer = Timer(device, rounds)
    rows = bench_statistics(timer, device, sizes["n"], sizes["d"], sizes["batch"], generator)
    for d in sizes["fd"]:
        rows += bench_distance(timer, device, d, generator)
    rows += bench_loss(timer, device, sizes["population"], sizes["d"], sizes["batch"], generator)
    return rows

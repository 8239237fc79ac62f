"""CMMD of two sets of 768-d unit embeddings (CLIP ViT-L/14's projected size): fastfid's float64
kernel sums in native blocks beside a plain torch implementation (full float32 kernel matrices, as
cmmd-pytorch computes them), in time (the benchmark group) and in peak memory (each in a child
process, its resident set's growth). FASTFID_BENCH_CMMD sets the embeddings per side (default
10,000; CI runs 500)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastfid.mmd import cmmd

SIZE = int(os.environ.get("FASTFID_BENCH_CMMD", "10000"))
GROUP = f"cmmd-{SIZE}x{SIZE}x768"


def unit_embeddings(rng, n, shift):
    z = rng.standard_normal((n, 768)) + shift
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def torch_cmmd(x, y, sigma=10.0, scale=1000.0) -> float:
    """The formula with torch's float32 matrices: three full kernel matrices."""
    import torch

    x, y = torch.from_numpy(x), torch.from_numpy(y)
    gamma = 1 / (2 * sigma**2)

    def mean_kernel(a, b):
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return torch.exp(-gamma * squared).mean()

    return float(scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(768)
    return unit_embeddings(rng, SIZE, 0.02), unit_embeddings(rng, SIZE, 0.0)


@pytest.mark.benchmark(group=GROUP)
def test_fastfid_cmmd(benchmark, embeddings):
    pytest.importorskip("torch")
    value = float(benchmark.pedantic(cmmd, args=embeddings, rounds=1, iterations=1))
    # torch's float32 means of n² kernel values round at ~1e-7 of about 1, times 1000: 1e-3 apart at most here.
    assert value == pytest.approx(torch_cmmd(*embeddings), abs=1e-3)


@pytest.mark.benchmark(group=GROUP)
def test_plain_torch_cmmd(benchmark, embeddings):
    pytest.importorskip("torch")
    value = benchmark.pedantic(torch_cmmd, args=embeddings, rounds=1, iterations=1)
    assert value > 0


# The child resets its peak resident set after making the inputs (Linux: 5 into /proc/self/clear_refs),
# so the peak it reports is the computation's alone.
_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, {here!r})
from test_cmmd_speed import unit_embeddings, torch_cmmd
from fastfid.mmd import cmmd
import torch

def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

rng = np.random.default_rng(768)
x, y = unit_embeddings(rng, {size}, 0.02), unit_embeddings(rng, {size}, 0.0)
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")
before = status("VmRSS:")
value = float(cmmd(x, y)) if {which!r} == "fastfid" else torch_cmmd(x, y)
print(json.dumps({{"value": value, "peak_kib": status("VmHWM:") - before}}))
"""


def test_peak_memory_beside_torch(embeddings):
    pytest.importorskip("torch")
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("the peak resident set is reset through Linux's /proc/self/clear_refs")
    if SIZE < 5000:
        pytest.skip("peak memory is compared from 5,000 embeddings a side (CI's small run checks the values)")
    here = os.path.dirname(os.path.abspath(__file__))
    peaks = {}
    for which in ("fastfid", "torch"):
        run = subprocess.run([sys.executable, "-c", _CHILD.format(here=here, size=SIZE, which=which)],
                             capture_output=True, text=True, check=True)
        peaks[which] = json.loads(run.stdout.strip().splitlines()[-1])["peak_kib"]
    print(f"\npeak memory above the inputs, {SIZE} x {SIZE}: fastfid {peaks['fastfid'] / 1024:.0f} MiB, "
          f"torch {peaks['torch'] / 1024:.0f} MiB")
    assert peaks["fastfid"] < peaks["torch"] / 4  # float32 n x n matrices (0.4 GB each at 10,000) against blocks

"""How many threads the native core's BLAS/LAPACK uses: the cores this process may run on (its CPU
affinity and its cgroup's CPU quota) less those that other processes keep busy right now.

OpenBLAS threads spin while they wait for work. Beside a data loader or another job, a pool as
wide as the machine spins against them, and a d = 2048 FD measured 3.3× its idle time with two
threads beside two busy processes on two cores, but 2.0× (the fair share) with one. Only the
library instance that fastfid links is set: numpy's own BLAS keeps the user's settings.

``FASTFID_NUM_THREADS`` fixes the count; ``OPENBLAS_NUM_THREADS`` caps it.
"""

from __future__ import annotations

import math
import os
import time
from functools import lru_cache


from fastfid._native import BLAS_POOL as _OWN_POOL
from fastfid._native import core as _core

# Load is sampled at most this often: a training loop calls update() hundreds of times a second.
_SAMPLE_SECONDS = 0.05
_SAMPLES, _SAMPLE_GAP_SECONDS = 3, 0.0002
_last: dict[str, float] = {"time": -math.inf, "threads": 0}


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


@lru_cache(maxsize=1)
def cgroup_cpu_limit() -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 ``cpu.max``, v1 CFS quota), None if unlimited."""
    text = _read("/sys/fs/cgroup/cpu.max")
    if text is not None:
        quota, _, period = text.partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    quota_v1, period_v1 = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota_v1 is None or period_v1 is None or int(quota_v1) <= 0:
        return None
    return int(quota_v1) / int(period_v1)


def allowed_cores() -> int:
    """Cores this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def busy_elsewhere(allowed: int) -> int:
    """Threads that would compete with the core's BLAS pool now: the kernel's instantaneous count of
    runnable threads, less the calling thread and the pool's own (spinning) workers. Other
    processes count, and so do this process's other threads (numpy's pool spinning after a GEMM).
    0 when this process may not use every core (``allowed``, from allowed_cores): the count then
    covers cores it cannot run on."""
    if allowed != (os.cpu_count() or 1):
        return 0
    # The least of a few samples: a thread that runs for a moment (a kernel worker, a shell) is
    # not a competitor for work that lasts tens of milliseconds; a busy process is in every sample.
    counts = []
    for sample in range(_SAMPLES):
        if sample:
            time.sleep(_SAMPLE_GAP_SECONDS)
        text = _read("/proc/loadavg")
        if text is None:
            return 0
        runnable = int(text.split()[3].partition("/")[0])
        counts.append(runnable - 1 - _pool_running())
    return max(0, min(counts))


def _pool_running() -> int:
    running = 0
    for task in _OWN_POOL:
        stat = _read(f"/proc/self/task/{task}/stat")
        if stat is not None and stat[stat.rfind(")") + 2:].startswith("R"):
            running += 1
    return running


def usable_threads() -> int:
    fixed = os.environ.get("FASTFID_NUM_THREADS")
    if fixed:
        return max(1, int(fixed))
    allowed = allowed_cores()
    threads = max(1, allowed - busy_elsewhere(allowed))
    cap = os.environ.get("OPENBLAS_NUM_THREADS")
    return min(threads, int(cap)) if cap and cap.isdigit() and int(cap) > 0 else threads


def adapt() -> int:
    """Set the core's BLAS threads for the work about to start; returns the count."""
    now = time.monotonic()
    if now - _last["time"] >= _SAMPLE_SECONDS:
        threads = usable_threads()
        if threads != _last["threads"]:
            _core.set_blas_threads(int(threads))
            _last["threads"] = threads
        _last["time"] = now
    return int(_last["threads"])

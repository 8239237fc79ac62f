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

from fastfid import _core

# Load is sampled at most this often: a training loop calls update() hundreds of times a second.
_SAMPLE_SECONDS = 0.05
_last = {"time": -math.inf, "threads": 0}


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
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def allowed_cores() -> int:
    """Cores this process may use: its affinity mask, capped by the cgroup quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(limit))) if limit else cores


def busy_elsewhere() -> int:
    """Runnable threads of other processes now (the kernel's instantaneous count, less this
    process's own). 0 when this process may not use every core: the count then includes cores it
    cannot run on, and says nothing about its own."""
    if allowed_cores() != (os.cpu_count() or 1):
        return 0
    text = _read("/proc/loadavg")
    if text is None:
        return 0
    runnable = int(text.split()[3].partition("/")[0])
    own = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    for task in tasks:
        stat = _read(f"/proc/self/task/{task}/stat")
        if stat is not None and stat[stat.rfind(")") + 2:].startswith("R"):
            own += 1
    return max(0, runnable - own)


def usable_threads() -> int:
    fixed = os.environ.get("FASTFID_NUM_THREADS")
    if fixed:
        return max(1, int(fixed))
    threads = max(1, allowed_cores() - busy_elsewhere())
    cap = os.environ.get("OPENBLAS_NUM_THREADS")
    return min(threads, int(cap)) if cap and cap.isdigit() and int(cap) > 0 else threads


def adapt() -> int:
    """Set the core's BLAS threads for the work about to start; returns the count."""
    now = time.monotonic()
    if now - _last["time"] >= _SAMPLE_SECONDS:
        threads = usable_threads()
        if threads != _last["threads"]:
            _core.set_blas_threads(threads)
            _last["threads"] = threads
        _last["time"] = now
    return _last["threads"]

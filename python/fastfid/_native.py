"""The native modules and their load order, in one place: numpy first (its BLAS threads start before
ours, so that ours can be told from them), then the BLAS/LAPACK wheel that the core links against
(scipy-openblas32), then the core (``_core``), then the device path's host code (``_cuda``).
Everything in fastfid takes ``core`` and ``cuda`` from here, never from the package face.
"""

from __future__ import annotations

import os

import numpy  # noqa: F401  (before the BLAS wheel: see the module doc)


def _task_ids() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


# OpenBLAS starts its worker threads when the library loads: the threads that appear while it and
# the core are loaded are this library's pool. Every other runnable thread, numpy's spinning pool
# included, competes with it for the cores (fastfid._threads).
_before_core = _task_ids()
import scipy_openblas32  # noqa: E402,F401  (loads the library the core links, before the core)

import fastfid._core as core  # noqa: E402

BLAS_POOL = frozenset(_task_ids() - _before_core)
"""The task ids of the core's BLAS worker threads."""

import fastfid._cuda as cuda  # noqa: E402

__all__ = ["BLAS_POOL", "core", "cuda"]

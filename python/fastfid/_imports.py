"""Importing the libraries fastfid borrows, with one line that says what is wrong when one cannot load.

The common failure is not a missing package but a torchvision built for another torch (PyPI's
torchvision beside a CPU-only torch, say): its import raises ``RuntimeError: operator
torchvision::nms does not exist``, from inside transformers, torchmetrics or the peers."""

from __future__ import annotations

import importlib
from importlib import metadata


def torchvision_problem(error: BaseException) -> str | None:
    """The one line for an import that failed because torchvision cannot load beside torch; None when
    ``error`` is something else."""
    text = str(error)
    if "torchvision" not in text and not isinstance(error, RuntimeError):
        return None
    try:
        import torchvision  # type: ignore[import-untyped]  # noqa: F401
        return None
    except ImportError:
        return None
    except Exception as cause:  # noqa: BLE001 - torchvision's failures come as RuntimeError and others
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return (f"torchvision {_version('torchvision')} cannot load beside torch {_version('torch')} ({first}): it was "
            "built for another torch; install the torchvision made for this torch, or a pair made together, e.g. "
            "`pip install torch==2.14.1 torchvision==0.29.1` (or `pip uninstall torchvision` where nothing needs it)")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(unknown version)"


def borrowed(module: str, need: str, install: str):
    """``module``, imported; ImportError in one line when it is absent (``need``: who needs it;
    ``install``: the command that installs it) or when torchvision cannot load beside torch."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(torchvision_problem(error) or f"{need} ({error}): {install}") from None
    except RuntimeError as error:
        problem = torchvision_problem(error)
        if problem is None:
            raise
        raise ImportError(problem) from None

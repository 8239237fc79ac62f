"""Where a job's items come from. A :class:`Source` is anything that can say how many items it has,
what it is, how to recognise it again, and hand out batches of a range of its items in order:
folders and zips of images, image arrays and generators (fastfid.data), and feature rows
(:class:`FeatureRows`). A statistics file is handled at the door: :func:`open_source` returns it as
:class:`FeatureStats`, never as a source.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fastfid.stats import FeatureStats

__all__ = ["FeatureBatch", "FeatureRows", "Source", "open_source"]


@runtime_checkable
class Source(Protocol):
    """A job's items, read in order by ranges (a shard, or what a resumed job has left)."""

    needs_network: bool
    """True for images (features come from a network), False for feature rows."""
    checks_items: bool
    """Whether a resumed job can check each item read so far (files can; an array's fingerprint
    covers every item at once; a generator's output cannot be checked)."""

    def __len__(self) -> int: ...

    @property
    def description(self) -> str:
        """What the source is, in messages and progress records (a path, an array's shape, ...)."""
        ...

    def fingerprint(self, content: bool = False) -> str:
        """What identifies the source as a whole (names, shapes; with ``content``, hashes)."""
        ...

    def item_identity(self, index: int, content: bool = False) -> str:
        """What identifies item ``index`` (only asked when ``checks_items``)."""
        ...

    @property
    def batches(self) -> Callable[..., Iterator[Any]]:
        """``batches(start, stop, *, batch_size, ...)``: batches of items ``start`` … ``stop - 1``, in order,
        each with ``images`` (None if all were unreadable), ``attempted`` (items read) and ``bad``
        ("name: why" of each unreadable one); image sources also take fastfid.data's resize plans and
        loader options."""
        ...


@dataclass
class FeatureBatch:
    """Rows of a feature source, as a job reads them (the counterpart of fastfid.data.Batch)."""

    images: np.ndarray
    attempted: int
    bad: tuple = ()


class FeatureRows:
    """A 2-D array of features (a memory-mapped .npy included) as a job's source: no network, read
    in large slices, checkpointed and resumed like images."""

    needs_network = False
    checks_items = False  # the whole file's fingerprint covers every row
    rows_per_read = 4096  # rows are cheap: read in large slices

    def __init__(self, array, description: str):
        self.array, self._description = array, description

    def __len__(self) -> int:
        return self.array.shape[0]

    @property
    def dim(self) -> int:
        return self.array.shape[1]

    @property
    def description(self) -> str:
        return self._description

    def fingerprint(self, content: bool = False) -> str:
        from fastfid.files.arrays import file_fingerprint

        return file_fingerprint(self._description, f"{tuple(self.array.shape)} {self.array.dtype}", content)

    def item_identity(self, index: int, content: bool = False) -> str:
        raise NotImplementedError("feature rows are identified by the file's fingerprint")

    def batches(self, start: int, stop: int, *, batch_size: int, **_):
        step = max(batch_size, self.rows_per_read)
        for first in range(start, stop, step):
            yield FeatureBatch(self.array[first:min(stop, first + step)], min(stop, first + step) - first)


def open_source(source, num_samples: int | None = None, space: str | None = None) -> FeatureStats | Source:
    """Statistics (a FeatureStats, a statistics .npz or an EDM2 reference .pkl: ``space`` picks one
    from a file of several spaces), or the Source of a folder, zip, .npy, array, tensor or generator
    callable."""
    if isinstance(source, FeatureStats):
        return source
    from fastfid.references import resolve

    source = resolve(source)  # a reference's name: its checked file, fetched if needed
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix not in (".npz", ".npy", ".pkl"):
            require_torch("images")
        if path.suffix in (".npz", ".pkl"):  # .pkl: an EDM2 reference (fastfid.files.nvidia)
            if space is None:
                return FeatureStats.load(path)
            from fastfid.representations import SpaceStats

            spaces = SpaceStats.load(path)
            if len(spaces) == 1 and path.suffix == ".npz":  # a file of one space gives it, whatever its name
                return next(iter(spaces.values()))
            if space not in spaces:
                raise ValueError(f"{path} holds no statistics of {space}; it has {', '.join(spaces)}")
            return spaces[space]
        if path.suffix == ".npy":
            from fastfid.files.arrays import open_array

            return _array_source(open_array(path), str(path.resolve()))
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        from fastfid.data import ImageFiles

        return ImageFiles(path)
    if callable(source) and not hasattr(source, "shape"):
        require_torch("generated images")
        from fastfid.data import ImageGenerator

        return ImageGenerator(source, num_samples)
    if hasattr(source, "shape"):
        return _array_source(source, f"{type(source).__name__} {tuple(source.shape)}")
    raise TypeError(f"cannot read images or features from a {type(source).__name__}: give a folder, zip, .npy, .npz, "
                    "array, tensor, FeatureStats or generator callable")


def require_torch(what: str) -> None:
    try:
        import torch  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{what} need torch and Pillow ({error}): pip install torch pillow "
                          "(see the README for the CPU-only torch)") from error


def _array_source(array, description: str) -> Source:
    if array.ndim == 2:
        return FeatureRows(array, description)
    if array.ndim != 4:
        raise ValueError(f"{description} has shape {tuple(array.shape)}: 2-D arrays are features (samples × dim), "
                         "4-D arrays are images (N, H, W, C) or (N, C, H, W)")
    require_torch("images")
    from fastfid.data import ImageArray

    return ImageArray(array, description)

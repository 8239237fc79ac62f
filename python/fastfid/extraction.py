"""Images → features → statistics: :func:`compute_stats`, :func:`compute_fid` and
:func:`inception_score` (need torch and Pillow).

A source is a folder of images (recursive), a zip archive, a ``.npy`` file (2-D: features, 4-D:
images), a ``.npz`` statistics file, a numpy array or torch tensor (2-D features or 4-D images),
a :class:`FeatureStats`, or a callable ``generate(n) -> images`` with ``num_samples``. Features
stream into :class:`FeatureStats` batch by batch, on the network's device: memory stays O(d²)
whatever the number of images.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from fastfid._text import counted, first_items
from fastfid.distance import FrechetResult, fid
from fastfid.distributed import shard_range
from fastfid.metrics import ClassScores, InceptionScore
from fastfid.stats import FeatureStats

if TYPE_CHECKING:
    from fastfid.representations import SpaceStats

__all__ = ["FIDResult", "FeatureExtractor", "compute_fid", "compute_stats", "inception_score"]


class Interrupted(KeyboardInterrupt):
    """A checkpointed job was stopped (SIGINT/SIGTERM) after saving everything it had done."""


@dataclass(frozen=True)
class FIDResult:
    """FID between two sources, with what it was computed on."""

    value: float
    feature_space: str | None
    """The network, layer and resizing (e.g. ``FIDInceptionV3(dims=2048, ...) resize=pytorch-fid 299x299``)."""
    resize: str | None
    """The resize mode images went through: this run's, or for statistics the one their feature space
    names; None for features, which name none."""
    counts: tuple[int | None, int | None]
    skipped: tuple[int, int]
    """Unreadable images left out of each side (only with ``skip_bad=True``)."""
    skipped_items: tuple[tuple[str, ...], tuple[str, ...]]
    """Each side's unreadable images, as "name: why"."""
    inception_score: InceptionScore | None
    distance: FrechetResult
    """The distance's diagnostics (trace term, method, rank, ...)."""
    statistics: tuple[FeatureStats, FeatureStats] | None = field(default=None, repr=False, compare=False)
    """The two sides' statistics, to save, merge, post to the service or log (fastfid.tracking)."""

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        text = f"FID: {self.value:.6f}"
        if self.inception_score is not None:
            text += f"  IS: {self.inception_score.mean:.4f} ± {self.inception_score.std:.4f}"
        if self.resize is not None:
            counts = " vs ".join("?" if c is None else str(c) for c in self.counts)
            text += f"  [{self.feature_space}; {counts} samples"
            text += f"; {counted(sum(self.skipped), 'unreadable image')} skipped]" if any(self.skipped) else "]"
        return text


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """pytorch-fid's default: one loader process per available core, at most 8."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class FeatureExtractor:
    """A feature network with its input handling: ``model`` is a dims (64, 192, 768, 2048: the FID
    Inception-v3), a representation space's name (``fastfid.models.space_names()``: ``"inception"``,
    ``"dinov2-vit-l14"``, ...) or :class:`~fastfid.models.Space`, or any ``torch.nn.Module`` mapping
    float NCHW images in [0, 1] to (N, d) features (4-D outputs are averaged over space).
    ``resize``: the preprocessing mode (None: ``"pytorch-fid"`` for Inception and other networks,
    ``"dgm-eval"`` for the spaces). ``image_size`` is what images are resized to (``"auto"``: 299 ×
    299 for the FID Inception, the space's size, the module's ``input_size`` attribute or none)."""

    def __init__(self, model=2048, *, weights=None, device=None, resize: str | None = None, image_size="auto"):
        import torch

        from fastfid.models.spaces import INCEPTION, Space, check_space_resize, get_space
        from fastfid.resize_modes import check_resize, input_scaling

        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {self.device}: torch sees no CUDA GPU here (torch.cuda.is_available() is "
                               "False); use --device cpu / device='cpu'")
        if model == INCEPTION:
            model = 2048
        space = model if isinstance(model, Space) else get_space(model) if isinstance(model, str) else None
        if space is not None:
            from fastfid.models.networks import SpaceNetwork

            self.resize = check_space_resize(resize or "dgm-eval")
            self.operation = space.resize_op(self.resize)  # the image operation of fastfid.data
            model = SpaceNetwork(space, weights)
        else:
            self.resize = self.operation = check_resize(resize or "pytorch-fid")
        if isinstance(model, (int, np.integer)) and not isinstance(model, bool):
            from fastfid.models import FIDInceptionV3

            model = FIDInceptionV3(int(model), weights=weights, scaling=input_scaling(self.resize))
        elif not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a dims (64, 192, 768, 2048), a space name, or a torch.nn.Module, got "
                            f"{type(model).__name__}")
        self.model = model.to(self.device).eval()
        size: Any = getattr(model, "input_size", None) if image_size == "auto" else image_size
        self.image_size = None if size is None else (int(size), int(size)) if isinstance(size, (int, np.integer)) \
            else tuple(size)
        name = getattr(model, "feature_space", type(model).__qualname__)
        where = "native size" if self.image_size is None else f"{self.image_size[0]}x{self.image_size[1]}"
        self.feature_space = f"{name} resize={self.resize} {where}"

    @property
    def plans(self) -> tuple:
        """How fastfid.data resizes images for this network: ((size, operation),)."""
        return ((self.image_size, self.operation),)

    @property
    def has_logits(self) -> bool:
        return hasattr(self.model, "features_and_logits")

    def __call__(self, images, logits: bool = False):
        """Features (and the class logits if asked) of a batch already on the device and resized."""
        import torch

        with torch.no_grad():
            if logits:
                if not self.has_logits:
                    raise TypeError(f"{type(self.model).__name__} gives no class logits: the Inception Score "
                                    "needs the FID Inception-v3")
                features, class_logits = self.model.features_and_logits(images)
            else:
                features, class_logits = self.model(images), None
        return _as_feature_matrix(features), class_logits

    def batch_features(self, images):
        """Features of user images (numpy or torch, uint8 or [0, 1] floats, NHWC or NCHW): converted,
        moved to the device and resized here."""
        from fastfid.data import as_image_batch, resize_batch

        images = as_image_batch(images).to(self.device, non_blocking=True)
        return self(resize_batch(images, self.image_size, self.operation))[0]


class SpaceExtractors:
    """Several feature networks fed from one decode of each image: each gets its own resize (one
    plan per distinct (size, operation): DINOv2, SigLIP, ConvNeXt and MAE share theirs), and a batch
    gives one feature matrix per network."""

    def __init__(self, names, *, weights=None, device=None, resize: str | None = None):
        if isinstance(weights, (str, os.PathLike)):
            raise ValueError("with several spaces, weights maps space names to files: {'dinov2-vit-l14': PATH, ...}")
        weights = dict(weights or {})
        self.names = [_space_name(name) for name in names]
        if not self.names:
            raise ValueError("model lists no spaces")
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"space {duplicates[0]!r} is named twice")
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(f"weights given for {', '.join(unknown)}, which is not among the spaces asked")
        modes = [_mode_for(name, resize) for name in self.names]
        if resize is not None and all(mode is None for mode in modes):
            raise ValueError(f"resize {resize!r} applies to none of {', '.join(self.names)}")
        self.extractors = [FeatureExtractor(space, weights=weights.get(name), device=device, resize=mode)
                           for name, space, mode in zip(self.names, names, modes)]
        self.device = self.extractors[0].device
        self.plans = tuple(dict.fromkeys(e.plans[0] for e in self.extractors))
        self._plan_of = [self.plans.index(e.plans[0]) for e in self.extractors]

    @property
    def feature_space(self) -> str:
        return "; ".join(f"{name}: {e.feature_space}" for name, e in zip(self.names, self.extractors))

    has_logits = False

    def __call__(self, views) -> list:
        """One feature matrix per network, from the batch resized by each plan."""
        return [extractor(views[plan])[0] for extractor, plan in zip(self.extractors, self._plan_of)]

    def new_stats(self):
        from fastfid.representations import SpaceStats

        device = None if self.device.type == "cpu" else self.device
        return SpaceStats({name: FeatureStats(_network_dim(e.model), device=device, feature_space=e.feature_space)
                           for name, e in zip(self.names, self.extractors)})


def _space_name(model) -> str:
    from fastfid.models.spaces import INCEPTION, Space, get_space

    if isinstance(model, Space):
        return model.name
    if model == INCEPTION:
        return INCEPTION
    if not isinstance(model, str):
        raise TypeError(f"a list of models names spaces (fastfid.models.space_names()), got {type(model).__name__}")
    return get_space(model).name


def _mode_for(name: str, resize: str | None) -> str | None:
    """One preprocessing mode for a mix of Inception and spaces: an Inception mode (pytorch-fid, clean,
    ...) applies to Inception, a space mode (dgm-eval) to the spaces, "torch-fidelity" (both have
    it) to all; the others keep their defaults."""
    from fastfid.models.spaces import INCEPTION, SPACE_RESIZE_MODES
    from fastfid.resize_modes import RESIZE_MODES

    if resize is None:
        return None
    if resize not in RESIZE_MODES + SPACE_RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES} (Inception) or {SPACE_RESIZE_MODES} (the spaces), "
                         f"got {resize!r}")
    return resize if resize in (RESIZE_MODES if name == INCEPTION else SPACE_RESIZE_MODES) else None


def _network_dim(model) -> int:
    for attribute in ("dims", "num_features"):
        if hasattr(model, attribute):
            return int(getattr(model, attribute))
    return 0  # learnt from the first batch


def _as_feature_matrix(features):
    if features.dim() == 4:
        features = features.mean(dim=(2, 3))  # spatial maps, as pytorch-fid pools them
    if features.dim() != 2:
        raise ValueError(f"the feature network returned shape {tuple(features.shape)}; expected (N, d) or (N, C, H, W)")
    return features


# --- sources -----------------------------------------------------------------------------------
def _open(source, num_samples, space: str | None = None):
    """→ ("stats", FeatureStats) | ("features", 2-D array) | ("images", an image source of fastfid.data).
    ``space``: the space to take from a statistics file of several spaces."""
    if isinstance(source, FeatureStats):
        return "stats", source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix not in (".npz", ".npy"):
            _require_torch("images")
        if path.suffix == ".npz":
            from fastfid.io import holds_spaces

            if space is not None and holds_spaces(path):
                from fastfid.representations import SpaceStats

                return "stats", SpaceStats.load(path)[space]
            return "stats", FeatureStats.load(path)
        if path.suffix == ".npy":
            from fastfid.io import open_array

            return _open_array(open_array(path), str(path.resolve()))
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        from fastfid.data import ImageFiles

        return "images", ImageFiles(path)
    if callable(source) and not hasattr(source, "shape"):
        _require_torch("generated images")
        from fastfid.data import ImageGenerator

        return "images", ImageGenerator(source, num_samples)
    if hasattr(source, "shape"):
        return _open_array(source, f"{type(source).__name__} {tuple(source.shape)}")
    raise TypeError(f"cannot read images or features from a {type(source).__name__}: give a folder, zip, .npy, .npz, "
                    "array, tensor, FeatureStats or generator callable")


def _require_torch(what: str) -> None:
    try:
        import torch  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{what} need torch and Pillow ({error}): pip install torch pillow "
                          "(see the README for the CPU-only torch)") from error


def _open_array(array, description: str):
    if array.ndim == 2:
        return "features", FeatureRows(array, description)
    if array.ndim != 4:
        raise ValueError(f"{description} has shape {tuple(array.shape)}: 2-D arrays are features (samples × dim), "
                         "4-D arrays are images (N, H, W, C) or (N, C, H, W)")
    _require_torch("images")
    from fastfid.data import ImageArray

    return "images", ImageArray(array, description)


@dataclass
class FeatureBatch:
    """Rows of a feature source, as a job reads them (the counterpart of fastfid.data.Batch)."""

    images: np.ndarray
    attempted: int
    bad: tuple = ()


class FeatureRows:
    """A 2-D array of features (a memory-mapped .npy included) as a job's source: no network, read
    in large slices, checkpointed and resumed like images."""

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
        from fastfid.io import file_fingerprint

        return file_fingerprint(self._description, f"{tuple(self.array.shape)} {self.array.dtype}", content)

    checks_items = False  # the whole file's fingerprint covers every row

    def batches(self, start: int, stop: int, *, batch_size: int, **_):
        step = max(batch_size, self.rows_per_read)
        for first in range(start, stop, step):
            yield FeatureBatch(self.array[first:min(stop, first + step)], min(stop, first + step) - first)


@dataclass
class _Progress:
    next: int
    bad: list[str] = field(default_factory=list)  # "name: why" of each unreadable image left out

    @property
    def skipped(self) -> int:
        return len(self.bad)


@overload
def compute_stats(source, *, model: list[Any] | tuple[Any, ...], weights=None, batch_size: int = ..., device=...,
                  num_workers=..., resize: str | None = ..., image_size=..., num_samples: int | None = ...,
                  skip_bad: bool = ..., shard: tuple[int, int] | None = ..., progress: bool = ..., checkpoint=...,
                  resume: bool = ..., overwrite: bool = ..., checkpoint_every: float = ..., fingerprint: str = ...,
                  distributed: bool = ...) -> "SpaceStats": ...
@overload
def compute_stats(source, *, model: Any = ..., weights=None, batch_size: int = ..., device=..., num_workers=...,
                  resize: str | None = ..., image_size=..., num_samples: int | None = ..., skip_bad: bool = ...,
                  shard: tuple[int, int] | None = ..., progress: bool = ..., checkpoint=..., resume: bool = ...,
                  overwrite: bool = ..., checkpoint_every: float = ..., fingerprint: str = ...,
                  distributed: bool = ...) -> FeatureStats: ...
def compute_stats(source, *, model=2048, weights=None, batch_size: int = 50, device=None, num_workers=None,
                  resize: str | None = None, image_size="auto", num_samples: int | None = None,
                  skip_bad: bool = False, shard: tuple[int, int] | None = None, progress: bool = True,
                  checkpoint=None, resume: bool = False, overwrite: bool = False, checkpoint_every: float = 60.0,
                  fingerprint: str = "stat", distributed: bool = False) -> "FeatureStats | SpaceStats":
    """Statistics of a source's features (see the module doc for sources).

    ``model``/``weights``/``device``/``resize``/``image_size``: see :class:`FeatureExtractor` (a
    ready one may be passed as ``model``). A list of space names (``["inception", "dinov2-vit-l14",
    ...]``) decodes each image once, resizes it for each network, and returns a
    :class:`~fastfid.representations.SpaceStats` (name → FeatureStats); ``weights`` is then a dict
    name → file for the spaces whose weights are given. ``num_workers`` loader processes for files (default: one
    per core, at most 8; 0 decodes in this process). ``skip_bad`` leaves unreadable images out
    (with a warning that counts them) instead of raising. ``shard=(i, k)`` takes the i-th of k
    contiguous parts (0-based), for job arrays and torch.distributed ranks; merge the parts after.
    ``checkpoint``: a .npz path rewritten every ``checkpoint_every`` seconds and at the end with the
    statistics and how far the job got; SIGINT/SIGTERM stop the job after saving it (raising
    :class:`Interrupted`); ``resume=True`` continues from it, after checking that the source has not
    changed: ``fingerprint="stat"`` compares each file's name, size and modification time,
    ``"content"`` their SHA-256 (reading every file); ``overwrite=True`` discards a partial run saved
    there and starts afresh. A job that fails keeps its checkpoint only if it got somewhere, and its
    exception's note says so. ``distributed=True`` (every rank of the initialised torch.distributed
    group calls it) shards the source across the ranks and merges their statistics exactly: every
    rank returns the total. Statistics and feature files need no network.
    """
    opened = _open(source, num_samples)
    stats, _, _ = _collect(opened, _extractor_for(model, weights, device, resize, image_size, [opened], progress),
                           batch_size=batch_size, num_workers=num_workers, num_samples=num_samples,
                           skip_bad=skip_bad, shard=shard, progress=progress, checkpoint=checkpoint, resume=resume,
                           overwrite=overwrite, checkpoint_every=checkpoint_every, fingerprint=fingerprint,
                           distributed=distributed)
    return stats


def inception_score(source, *, splits: int = 10, weights=None, batch_size: int = 50, device=None, num_workers=None,
                    resize: str | None = None, num_samples: int | None = None, skip_bad: bool = False,
                    progress: bool = True) -> InceptionScore:
    """Inception Score of images (exp of the mean KL between p(y|x) and p(y), over ``splits`` contiguous
    splits; mean and std) with the FID Inception-v3's 1008 classes."""
    extractor = FeatureExtractor(2048, weights=weights, device=device, resize=resize)
    _, scores, _ = _collect(_open(source, num_samples), extractor, batch_size=batch_size, num_workers=num_workers,
                            num_samples=num_samples, skip_bad=skip_bad, progress=progress, splits=splits)
    return scores.result()


def compute_fid(source1, source2, *, model=2048, weights=None, batch_size: int = 50, device=None, num_workers=None,
                resize: str | None = None, image_size="auto", num_samples: int | None = None,
                skip_bad: bool = False, progress: bool = True, method: str = "auto", isc: bool = False,
                splits: int = 10, distributed: bool = False) -> FIDResult:
    """FID between two sources (folders, zips, .npy/.npz files, arrays, tensors, statistics,
    generators): one feature network for both, statistics streamed, then the exact distance.
    ``isc=True`` also gives the Inception Score of ``source1`` (the generated set, by convention)
    from the same pass. ``distributed=True``: every rank of the torch.distributed group calls it with
    the same arguments; each takes its share of every source, the statistics (and IS sums) are merged
    exactly, and every rank returns the same result. Returns a :class:`FIDResult` that says how the
    images were resized."""
    named = _space_name(model) if isinstance(model, str) else None
    opened = [_open(source, num_samples, named) for source in (source1, source2)]
    extractor = _extractor_for(model, weights, device, resize, image_size, opened, progress)
    sides, scores, skipped = [], None, []
    for index, source in enumerate(opened):
        stats, side_scores, side_bad = _collect(
            source, extractor, batch_size=batch_size, num_workers=num_workers, num_samples=num_samples,
            skip_bad=skip_bad, progress=progress, splits=splits if isc and index == 0 else None,
            distributed=distributed)
        if isc and index == 0 and side_scores is None:
            raise ValueError("the Inception Score needs images as the first source, not statistics or features")
        sides.append(stats)
        scores = scores or side_scores
        skipped.append(tuple(side_bad))
    distance = fid(sides[0], sides[1], method=method, return_info=True)
    feature_space = sides[0].feature_space or sides[1].feature_space
    if isinstance(extractor, SpaceExtractors):
        raise ValueError("compute_fid compares one space; for several use compute_stats(model=[...]) and "
                         "SpaceStats.fdr, or `fastfid fdr`")
    mode = extractor.resize if extractor is not None else resize_named_in(feature_space)
    return FIDResult(distance.value, feature_space, mode, (sides[0].count, sides[1].count),
                     (len(skipped[0]), len(skipped[1])), (skipped[0], skipped[1]),
                     None if scores is None else scores.result(), distance, (sides[0], sides[1]))


def resize_named_in(feature_space: str | None) -> str | None:
    """The resize mode a feature space names (``... resize=pytorch-fid 299x299``), else None."""
    for word in (feature_space or "").split():
        if word.startswith("resize="):
            return word[len("resize="):]
    return None


def _extractor_for(model, weights, device, resize, image_size, opened, progress=False):
    """The feature network, built only if some opened source holds images (statistics need none)."""
    if isinstance(model, (FeatureExtractor, SpaceExtractors)):
        return model
    several = isinstance(model, (list, tuple))
    if several:
        for name in model:
            _space_name(name)  # an unknown name fails before anything is read
    else:
        _check_model_and_mode(model, resize)
    if all(kind != "images" for kind, _ in opened):
        return None
    if progress:  # reading the weights (or downloading them) takes seconds before the first image
        name = f"the FID Inception-v3 (dims {model})" if isinstance(model, (int, np.integer)) else \
            ", ".join(map(_space_name, model)) if several else model if isinstance(model, str) else "the feature network"
        print(f"fastfid: loading {name}", file=sys.stderr, flush=True)
    if several:
        return SpaceExtractors(model, weights=weights, device=device, resize=resize)
    return FeatureExtractor(model, weights=weights, device=device, resize=resize, image_size=image_size)


def _check_model_and_mode(model, resize) -> None:
    """The model's name and its preprocessing mode, checked before any image is read."""
    from fastfid.models.spaces import INCEPTION, Space, check_space_resize
    from fastfid.resize_modes import check_resize

    named = _space_name(model) if isinstance(model, (str, Space)) else None  # an unknown name fails here
    if resize is not None:
        (check_resize if named in (None, INCEPTION) else check_space_resize)(resize)


def _collect(opened, extractor, *, distributed=False, **options):
    """→ (statistics, class scores or None, unreadable images skipped) of one opened source; with ``distributed``,
    this rank's share, then the exact merge of all ranks."""
    if not distributed or opened[0] == "stats":
        return _collect_here(opened, extractor, **options)
    from fastfid import distributed as ranks

    if options.get("shard") is not None or options.get("checkpoint") is not None:
        raise ValueError("distributed runs choose their shards themselves and cannot be checkpointed: "
                         "use shard=(i, k) job arrays with checkpoints instead")
    rank, world = ranks.rank_and_world()
    # A rank whose whole share is unreadable (skip_bad) has nothing to add, not a failure: only
    # the merged total must hold samples.
    options.update(shard=(rank, world), progress=options["progress"] and rank == 0, require_samples=False)
    failure = None
    try:
        stats, scores, bad = _collect_here(opened, extractor, **options)
    except Exception as error:  # every rank must learn of it, or the others would wait forever
        failure = error
    if not ranks.all_agree(failure is None):
        raise failure or RuntimeError("another rank failed (see its error)")
    stats.all_reduce()
    if stats.count == 0:  # the same total on every rank, so every rank raises
        raise ValueError(f"{opened[1].description}: no readable items on any rank")
    if scores is not None:
        scores.state = ranks.sum_across_ranks(scores.state)
    return stats, scores, ranks.concatenate_lists(bad)


def _collect_here(opened, extractor, *, batch_size, num_workers, num_samples, skip_bad, progress, shard=None,
                  splits=None, checkpoint=None, resume=False, overwrite=False, checkpoint_every=60.0,
                  fingerprint="stat", require_samples=True):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    kind, opened = opened
    if kind == "stats":
        if shard is not None:
            raise ValueError("a statistics file cannot be sharded: it is already statistics")
        if resume or checkpoint is not None:
            raise ValueError("a statistics file needs no checkpoint and has nothing to resume: it is already "
                             "statistics")
        return opened, None, []
    start, stop = 0, len(opened)
    total = stop
    if shard is not None:
        start, stop = shard_range(total, *shard)
    if kind == "features":
        extractor = None  # features go straight into the statistics
        if splits is not None:
            raise ValueError("the Inception Score needs images, not features")
    elif extractor is None:
        raise ValueError("images need a feature network")
    job = _Job(opened, extractor, total, start, stop, shard, splits, checkpoint, resume, overwrite, fingerprint)
    return job.run(batch_size=batch_size, num_workers=default_workers() if num_workers is None else num_workers,
                   skip_bad=skip_bad, progress=progress, checkpoint_every=checkpoint_every,
                   require_samples=require_samples)


class _Job:
    """One source's range into statistics: images through the network (and class scores), or
    feature rows straight in (``extractor`` None), with the optional checkpoint: the statistics
    plus the next item to read, saved atomically."""

    def __init__(self, source, extractor, total, start, stop, shard, splits, checkpoint, resume, overwrite=False,
                 fingerprint="stat"):
        if fingerprint not in ("stat", "content"):
            raise ValueError(f"fingerprint must be 'stat' (names, sizes, times) or 'content' (hashes), got {fingerprint!r}")
        self.source, self.extractor, self.total = source, extractor, total
        self.start, self.stop, self.shard = start, stop, shard
        self.scores = None if splits is None else ClassScores(total, splits)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.feature_space = None if extractor is None else extractor.feature_space
        self.device = None if extractor is None or extractor.device.type == "cpu" else extractor.device
        self.content = fingerprint == "content"
        listing = None if self.checkpoint is None else source.fingerprint(content=self.content)
        self.record = {"source": source.description, "listing": listing, "items": total,
                       "shard": list(shard) if shard else None, "feature_space": self.feature_space,
                       "fingerprint": fingerprint}
        # What the items read so far held (sizes and times, or hashes), chained in order: a resume
        # checks that none of them changed, while the items still to read may (a repaired file).
        self.processed = hashlib.sha256()
        # Features are rows of a matrix: saying "images" of them misleads.
        self.unit = "images" if extractor is not None else "rows"
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the saved run, or discard it")
        self.stats, self.progress = self._start(resume, overwrite)

    def _note_processed(self, first: int, stop: int) -> None:
        if self.checkpoint is not None and self.source.checks_items:
            for index in range(first, stop):
                self.processed.update(self.source.item_identity(index, self.content).encode() + b"\n")

    @property
    def _several(self) -> bool:
        return isinstance(self.extractor, SpaceExtractors)

    def _new_stats(self, dim: int | None = None):
        if self._several:
            return self.extractor.new_stats()
        return FeatureStats(dim or self._feature_dim(), device=self.device, feature_space=self.feature_space)

    def _feature_dim(self) -> int:
        if self.extractor is None:
            return self.source.dim
        return _network_dim(self.extractor.model)

    def _start(self, resume: bool, overwrite: bool):
        from fastfid.io import read_progress

        if self.checkpoint is None or not self.checkpoint.exists() or overwrite:
            return None, _Progress(self.start)
        saved = read_progress(self.checkpoint)
        if not resume:
            if saved is not None and not saved.get("complete"):
                raise ValueError(f"{self.checkpoint} holds a partial run ({self._done(saved)}): continue it with "
                                 "--resume / resume=True, or start afresh with --overwrite / overwrite=True")
            return None, _Progress(self.start)
        if saved is None:
            raise ValueError(f"{self.checkpoint} has no progress record: it was not written by a resumable job")
        afresh = f"start afresh with --overwrite / overwrite=True (discards the {self._done(saved)})"
        for key, value in self.record.items():
            if key == "listing" and saved.get(key) != value:
                raise ValueError(f"cannot resume from {self.checkpoint}: {self.source.description} changed since it "
                                 f"was saved (other files, or other contents); {afresh}")
            if saved.get(key) != value:
                raise ValueError(f"cannot resume from {self.checkpoint}: its {key} is {saved.get(key)!r}, "
                                 f"this run's is {value!r}")
        self._note_processed(int(saved["start"]), int(saved["next"]))
        if saved.get("processed") != self.processed.hexdigest():
            what = "contents" if self.content else "sizes or modification times"
            raise ValueError(f"cannot resume from {self.checkpoint}: files of {self.source.description} already "
                             f"processed changed since it was saved (their {what} differ); {afresh}")
        if self.scores is not None:
            raise ValueError("resumable jobs compute statistics only")
        stats: Any = self._load_checkpoint()
        if stats is not None and stats.count == 0:
            stats = None  # nothing was added yet; the width is learnt again from the first batch
        elif stats is not None and self.device is not None:
            stats = stats.to(self.device)
        bad = list(saved.get("skipped_items", []))
        bad += ["(unnamed: skipped by an earlier version)"] * (int(saved["skipped"]) - len(bad))
        return stats, _Progress(int(saved["next"]), bad)

    def _load_checkpoint(self):
        if self._several:
            from fastfid.representations import SpaceStats

            return SpaceStats.load(self.checkpoint, allow_partial=True)
        return FeatureStats.load(self.checkpoint, allow_partial=True)

    def _done(self, saved: dict | None = None) -> str:
        """How far this job (or a saved one) got: "400 of 1000 rows done"."""
        first, done, stop = (self.start, self.progress.next, self.stop) if saved is None else \
            (int(saved["start"]), int(saved["next"]), int(saved["stop"]))
        return f"{done - first} of {stop - first} {self.unit} done"

    def _save(self) -> None:
        if self.stats is None:
            if not (self._several or self._feature_dim()):  # every space's network declares its width
                return  # nothing added yet, and the width is unknown until the first batch: nothing to save
            self.stats = self._new_stats()
        from fastfid.io import save_stats

        save: Any = self.stats.save if self._several else partial(save_stats, self.stats)
        save(self.checkpoint, progress={
            **self.record, "start": self.start, "stop": self.stop, "next": self.progress.next,
            "skipped": self.progress.skipped, "skipped_items": self.progress.bad,
            "complete": self.progress.next >= self.stop,
            "processed": self.processed.hexdigest()})

    def run(self, *, batch_size, num_workers, skip_bad, progress, checkpoint_every, require_samples=True):
        from tqdm import tqdm

        extractor, done = self.extractor, self.progress
        resumed_at = done.next
        bar = tqdm(total=self.stop - self.start, initial=done.next - self.start, unit="img" if extractor else "row",
                   file=sys.stderr, disable=not progress, desc=Path(self.source.description).name[:30] or "images",
                   leave=False)
        stop_signal = _StopOnSignal(enabled=self.checkpoint is not None)
        last_save = time.monotonic()
        image_options = {} if extractor is None else dict(
            plans=extractor.plans, num_workers=num_workers,
            pin_memory=extractor.device.type == "cuda", device=extractor.device)
        batches = iter(self.source.batches(done.next, self.stop, batch_size=batch_size, **image_options))
        # Until the first batch is through the network (tens of seconds on a CPU), the bar says
        # what is under way instead of sitting at 0 %.
        first_batch = True
        bar.set_postfix_str(f"reading the first {self.unit}")
        with bar, stop_signal:
            try:
                while not stop_signal.requested:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        if stop_signal.requested:  # loader workers killed by the same Ctrl-C
                            break
                        raise
                    if batch.bad and not skip_bad:
                        raise OSError(f"cannot read image {batch.bad[0]} (skip_bad=True / --skip-bad leaves "
                                      "unreadable images out and names them)")
                    if first_batch and extractor is not None:
                        bar.set_postfix_str(f"the network on the first {batch.attempted} images")
                    if batch.images is not None:
                        self._add(batch)
                    if first_batch:
                        bar.set_postfix_str("", refresh=False)
                        first_batch = False
                    self._note_processed(done.next, done.next + batch.attempted)
                    done.next += batch.attempted
                    done.bad += batch.bad
                    bar.update(batch.attempted)
                    if self.checkpoint is not None and time.monotonic() - last_save >= checkpoint_every:
                        self._save()
                        last_save = time.monotonic()
            except BaseException as error:
                self._save_after_failure(error, resumed_at)
                raise
            # The statistics and the count of items read always agree, so a resume loses nothing.
            if self.checkpoint is not None and (done.next > self.start or not stop_signal.requested):
                self._save()
        if stop_signal.requested:
            kept = (f"{self._done()} are saved in {self.checkpoint}: --resume / resume=True continues"
                    if done.next > self.start else "nothing was done, so nothing was saved")
            raise Interrupted(f"stopped by signal; {kept}")
        if done.bad:
            warnings.warn(f"{counted(done.skipped, 'unreadable image')} of {self.source.description} "
                          f"{'was' if done.skipped == 1 else 'were'} skipped: {first_items(done.bad)}",
                          RuntimeWarning, stacklevel=4)
        if require_samples and self.start < self.stop and (self.stats is None or self.stats.count == 0):
            raise ValueError(f"{self.source.description}: no readable {self.unit} in items {self.start} … "
                             f"{self.stop - 1}")
        if self.stats is None:  # an empty shard (more ranks than images): it merges as nothing
            self.stats = self._new_stats()
        return self.stats, self.scores, done.bad

    def _save_after_failure(self, error: BaseException, resumed_at: int) -> None:
        """A failed job keeps what it did, and says so with the command that continues; one that did
        nothing leaves no checkpoint of zero progress (which a fixed rerun would have to delete)."""
        if self.checkpoint is None or self.progress.next == self.start:
            return
        if self.progress.next > resumed_at:
            self._save()
        advice = ("repair the item and rerun the same command with --resume / resume=True"
                  if self.source.checks_items else
                  f"--resume / resume=True continues while {self.source.description} is unchanged; once it is "
                  "changed, --overwrite / overwrite=True starts afresh")
        note = f"{self._done()} are saved in {self.checkpoint}: {advice}"
        if hasattr(error, "add_note"):
            error.add_note(note)
        else:  # Python 3.10: the same attribute, which the command line prints
            error.__notes__ = [*getattr(error, "__notes__", []), note]

    def _add(self, batch) -> None:
        if self.extractor is None:
            if self.stats is None:
                self.stats = self._new_stats()
            try:
                self.stats.update(batch.images)
            except (ValueError, TypeError) as error:
                first = self.progress.next
                raise type(error)(f"{self.source.description}, rows {first}–{first + batch.attempted - 1}: {error}") \
                    from error
            return
        if self._several:
            if self.stats is None:
                self.stats = self._new_stats()
            self.stats.update(self.extractor([v.to(self.extractor.device, non_blocking=True) for v in batch.views]))
            return
        images = batch.images.to(self.extractor.device, non_blocking=True)
        features, logits = self.extractor(images, logits=self.scores is not None)
        if self.stats is None:
            self.stats = self._new_stats(features.shape[1])
        self.stats.update(features)
        if self.scores is not None:
            self.scores.update(logits.cpu().numpy(), self.progress.next)


class _StopOnSignal:
    """While active (main thread only), SIGINT and SIGTERM set ``requested`` instead of raising, so the
    job stops between batches with its statistics and progress consistent."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: dict = {}

    def __enter__(self):
        if self.enabled:
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._request)
        return self

    def _request(self, number, frame):
        self.requested = True

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

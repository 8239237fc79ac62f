"""Images → features → statistics: :func:`compute_stats`, :func:`compute_fid` and
:func:`inception_score` (need torch and Pillow).

A source is a folder of images (recursive), a zip archive, a ``.npy`` file (2-D: features, 4-D:
images), a ``.npz`` statistics file, a numpy array or torch tensor (2-D features or 4-D images),
a :class:`FeatureStats`, or a callable ``generate(n) -> images`` with ``num_samples``. Features
stream into :class:`FeatureStats` batch by batch, on the network's device: memory stays O(d²)
whatever the number of images.

The rooms: ``sources`` (the Source protocol; statistics handled at the door), ``networks`` (the
feature networks and their checks), ``job`` (the loop and what a batch adds to), ``checkpoint``
(the progress record of a resumable job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from fastfid._text import counted
from fastfid.distance import FrechetResult, fid
from fastfid.extraction.job import Interrupted, collect
from fastfid.extraction.networks import (FeatureExtractor, SpaceExtractors, check_comparable, check_model,
                                         extractor_for, space_name)
from fastfid.extraction.sources import FeatureRows, Source, open_source
from fastfid.metrics import InceptionScore
from fastfid.models.label import FeatureSpace
from fastfid.stats import FeatureStats

if TYPE_CHECKING:
    from fastfid.representations import SpaceStats

__all__ = ["FIDResult", "FeatureExtractor", "FeatureRows", "Interrupted", "Source", "SpaceExtractors", "compute_fid",
           "compute_stats", "inception_score"]


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

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-able values (``fastfid fid --json`` prints it; the trackers log it)."""
        distance = self.distance.as_dict()
        distance.pop("fid")
        return {"fid": self.value, "feature_space": self.feature_space, "resize": self.resize,
                "counts": list(self.counts), "skipped": list(self.skipped),
                "skipped_items": [list(items) for items in self.skipped_items],
                "inception_score": None if self.inception_score is None else self.inception_score.as_dict(),
                **distance}


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
    check_model(model, resize)
    opened = open_source(source, num_samples)
    if isinstance(opened, FeatureStats):
        if shard is not None:
            raise ValueError("a statistics file cannot be sharded: it is already statistics")
        if resume or checkpoint is not None:
            raise ValueError("a statistics file needs no checkpoint and has nothing to resume: it is already "
                             "statistics")
        return opened
    extractor = extractor_for(model, weights, device, resize, image_size, progress=progress) \
        if opened.needs_network else None
    stats, _, _ = collect(opened, extractor, batch_size=batch_size, num_workers=num_workers, skip_bad=skip_bad,
                          shard=shard, progress=progress, checkpoint=checkpoint, resume=resume, overwrite=overwrite,
                          checkpoint_every=checkpoint_every, fingerprint=fingerprint, distributed=distributed)
    return stats


def inception_score(source, *, splits: int = 10, weights=None, batch_size: int = 50, device=None, num_workers=None,
                    resize: str | None = None, num_samples: int | None = None, skip_bad: bool = False,
                    progress: bool = True) -> InceptionScore:
    """Inception Score of images (exp of the mean KL between p(y|x) and p(y), over ``splits`` contiguous
    splits; mean and std) with the FID Inception-v3's 1008 classes."""
    opened = open_source(source, num_samples)
    if isinstance(opened, FeatureStats) or not opened.needs_network:
        raise ValueError("the Inception Score needs images, not statistics or features")
    extractor = FeatureExtractor(2048, weights=weights, device=device, resize=resize)
    _, scores, _ = collect(opened, extractor, batch_size=batch_size, num_workers=num_workers, skip_bad=skip_bad,
                           progress=progress, splits=splits)
    return scores.result()


def compute_fid(source1, source2, *, model=2048, weights=None, batch_size: int = 50, device=None, num_workers=None,
                resize: str | None = None, image_size="auto", num_samples: int | None = None,
                skip_bad: bool = False, progress: bool = True, method: str = "auto", isc: bool = False,
                splits: int = 10, distributed: bool = False, ddof: int = 1) -> FIDResult:
    """FID between two sources (folders, zips, .npy/.npz files, arrays, tensors, statistics,
    generators): one feature network for both, statistics streamed, then the exact distance.
    ``isc=True`` also gives the Inception Score of ``source1`` (the generated set, by convention)
    from the same pass. ``distributed=True``: every rank of the torch.distributed group calls it with
    the same arguments; each takes its share of every source, the statistics (and IS sums) are merged
    exactly, and every rank returns the same result. ``ddof``: the covariance's divisor n − ddof for
    the statistics computed here (1, as pytorch-fid, ADM and EDM; 0, as StyleGAN2-ADA's and StyleGAN3's
    metrics); statistics read from a (mu, sigma) file keep theirs. Returns a :class:`FIDResult` that
    says how the images were resized."""
    if isinstance(model, (list, tuple, SpaceExtractors)):  # refused before any source is opened
        raise ValueError("compute_fid compares one space; for several use compute_stats(model=[...]) and "
                         "SpaceStats.fdr, or `fastfid fdr`")
    check_model(model, resize)
    named = space_name(model) if isinstance(model, str) else None
    resize = _reference_resize((source1, source2), named, model, weights, resize)
    opened = [open_source(source, num_samples, named) for source in (source1, source2)]
    if isc and (isinstance(opened[0], FeatureStats) or not opened[0].needs_network):
        raise ValueError("the Inception Score needs images as the first source, not statistics or features")
    images = any(not isinstance(side, FeatureStats) and side.needs_network for side in opened)
    extractor = extractor_for(model, weights, device, resize, image_size, progress=progress) if images else None
    for index, side in enumerate(opened):
        if extractor is not None and isinstance(side, FeatureStats):
            check_comparable(extractor, side, f"the statistics of source {index + 1}")
    sides, scores, skipped = [], None, []
    for index, side in enumerate(opened):
        if isinstance(side, FeatureStats):
            stats, side_scores, side_bad = side, None, []
        else:
            stats, side_scores, side_bad = collect(
                side, extractor, batch_size=batch_size, num_workers=num_workers, skip_bad=skip_bad, progress=progress,
                splits=splits if isc and index == 0 else None, distributed=distributed)
        sides.append(stats)
        scores = scores or side_scores
        skipped.append(tuple(side_bad))
    compared = [side if ddof == 1 or side.count is None else _with_divisor(side, ddof) for side in sides]
    distance = fid(compared[0], compared[1], method=method, return_info=True)
    feature_space = sides[0].feature_space or sides[1].feature_space
    mode = extractor.resize if extractor is not None else resize_named_in(feature_space)
    return FIDResult(distance.value, feature_space, mode, (sides[0].count, sides[1].count),
                     (len(skipped[0]), len(skipped[1])), (skipped[0], skipped[1]),
                     None if scores is None else scores.result(), distance, (sides[0], sides[1]))


def _reference_resize(sources, space: str | None, model, weights, resize: str | None) -> str | None:
    """The preprocessing a named reference among ``sources`` was computed with, applied to the images
    unless ``resize`` says otherwise; a ``resize`` that differs from it is refused (it would compare
    other features), as is a space the reference holds no statistics of."""
    from fastfid.extraction.networks import is_detector
    from fastfid.models.spaces import INCEPTION
    from fastfid.references import named

    reference = next((r for r in map(named, sources) if r is not None), None)
    if reference is None:
        return resize
    if reference.format == "kid-features":
        raise ValueError(f"{reference.name} holds clean-fid's KID features, not FID statistics: use it with "
                         "fastfid.compat.cleanfid.compute_kid, or the reference without /kid for FID")
    space = space or INCEPTION
    if space not in reference.spaces:
        raise ValueError(f"{reference.name} holds statistics of {', '.join(reference.spaces)}, not of {space}")
    if is_detector(model, weights):  # NVIDIA's detector resizes inside itself: EDM's and EDM2's own features
        return resize
    wanted = reference.resize_for(space)
    if resize is not None and resize != wanted:
        raise ValueError(f"{reference.name} holds features of images preprocessed by {wanted!r}; resize={resize!r} "
                         f"would give other features (leave the resize out, or give {wanted!r})")
    return wanted


def _with_divisor(stats: FeatureStats, ddof: int) -> FeatureStats:
    """A (mu, sigma) summary of ``stats`` whose covariance has the divisor n − ``ddof``."""
    host = stats.to("cpu")
    summary = FeatureStats.from_mean_cov(host.mean, host.covariance(ddof))
    summary.feature_space = stats.feature_space
    return summary


def resize_named_in(feature_space: str | None) -> str | None:
    """The resize mode a feature space names (``... resize=pytorch-fid 299x299``), else None."""
    return FeatureSpace.parse(feature_space).resize if feature_space else None

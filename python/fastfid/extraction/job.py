"""The job: one source's range into statistics, batch by batch, with its progress bar, its checkpoint
and its stop on SIGINT/SIGTERM. What a batch adds to is chosen once, when the job starts: feature
rows straight into statistics, one network (with class scores for the Inception Score), or several
networks (one statistics per space)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fastfid._text import counted, first_items
from fastfid.distributed import shard_range
from fastfid.extraction.checkpoint import Checkpoint, Progress
from fastfid.extraction.networks import SpaceExtractors, default_workers, model_dim
from fastfid.extraction.sources import Source
from fastfid.files.atomic import writing
from fastfid.metrics import ClassScores
from fastfid.stats import FeatureStats


class Interrupted(KeyboardInterrupt):
    """A checkpointed job was stopped (SIGINT/SIGTERM) after saving everything it had done."""


# --- what a batch adds to --------------------------------------------------------------------------
class _Rows:
    """Feature rows into statistics of the source's width."""

    unit = "rows"
    scores = None

    def __init__(self, source: Source):
        self.source = source
        self.feature_space = None
        self.device = None

    def new_stats(self, dim: int | None = None) -> FeatureStats:
        return FeatureStats(dim or self.source.dim, feature_space=None)  # type: ignore[attr-defined]

    def width_known(self) -> bool:
        return True

    def add(self, stats, batch, first: int):
        stats = stats if stats is not None else self.new_stats()
        try:
            stats.update(batch.images)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{self.source.description}, rows {first}–{first + batch.attempted - 1}: {error}") \
                from error
        return stats


class _Network:
    """Images through one network into statistics on its device (and, if asked, class scores)."""

    unit = "images"

    def __init__(self, extractor, total: int, splits: int | None):
        self.extractor = extractor
        self.scores = None if splits is None else ClassScores(total, splits)
        self.feature_space = extractor.feature_space
        self.device = None if extractor.device.type == "cpu" else extractor.device

    def new_stats(self, dim: int | None = None) -> FeatureStats:
        return FeatureStats(dim or model_dim(self.extractor.model), device=self.device,
                            feature_space=self.feature_space)

    def width_known(self) -> bool:
        return bool(model_dim(self.extractor.model))

    def add(self, stats, batch, first: int):
        images = batch.images.to(self.extractor.device, non_blocking=True)
        features, logits = self.extractor(images, logits=self.scores is not None)
        stats = stats if stats is not None else self.new_stats(features.shape[1])
        stats.update(features)
        if self.scores is not None:
            self.scores.update(logits.cpu().numpy(), first)
        return stats


class _Networks:
    """Images through several networks (each decoded once, resized per network) into SpaceStats."""

    unit = "images"
    scores = None

    def __init__(self, extractors: SpaceExtractors):
        self.extractor = extractors
        self.feature_space = extractors.feature_space
        self.device = None if extractors.device.type == "cpu" else extractors.device

    def new_stats(self, dim: int | None = None):
        return self.extractor.new_stats()

    def width_known(self) -> bool:
        return True  # every space's network declares its width

    def add(self, stats, batch, first: int):
        stats = stats if stats is not None else self.new_stats()
        stats.update(self.extractor([view.to(self.extractor.device, non_blocking=True) for view in batch.views]))
        return stats


def _accumulation(source: Source, extractor, total: int, splits: int | None):
    if not source.needs_network:
        if splits is not None:
            raise ValueError("the Inception Score needs images, not features")
        return _Rows(source)
    if extractor is None:
        raise ValueError("images need a feature network")
    if isinstance(extractor, SpaceExtractors):
        return _Networks(extractor)
    return _Network(extractor, total, splits)


# --- the job -------------------------------------------------------------------------------------
def collect(source: Source, extractor, *, distributed: bool = False, **options):
    """→ (statistics, class scores or None, unreadable images skipped) of one source; with
    ``distributed``, this rank's share, then the exact merge of all ranks."""
    if not distributed:
        return _collect_here(source, extractor, **options)
    import fastfid.distributed as ranks

    if options.get("shard") is not None or options.get("checkpoint") is not None:
        raise ValueError("distributed runs choose their shards themselves and cannot be checkpointed: "
                         "use shard=(i, k) job arrays with checkpoints instead")
    rank, world = ranks.rank_and_world()
    # A rank whose whole share is unreadable (skip_bad) has nothing to add, not a failure: only
    # the merged total must hold samples.
    options.update(shard=(rank, world), progress=options["progress"] and rank == 0, require_samples=False)
    failure = None
    try:
        stats, scores, bad = _collect_here(source, extractor, **options)
    except Exception as error:  # every rank must learn of it, or the others would wait forever
        failure = error
    if not ranks.all_agree(failure is None):
        raise failure or RuntimeError("another rank failed (see its error)")
    stats.all_reduce()
    if stats.count == 0:  # the same total on every rank, so every rank raises
        raise ValueError(f"{source.description}: no readable items on any rank")
    if scores is not None:
        scores.state = ranks.sum_across_ranks(scores.state)
    return stats, scores, ranks.concatenate_lists(bad)


def _collect_here(source: Source, extractor, *, batch_size, num_workers, skip_bad, progress, shard=None, splits=None,
                  checkpoint=None, resume=False, overwrite=False, checkpoint_every=60.0, fingerprint="stat",
                  require_samples=True):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    total = len(source)
    start, stop = shard_range(total, *shard) if shard is not None else (0, total)
    with contextlib.nullcontext() if checkpoint is None else writing(checkpoint):  # one writer per checkpoint
        job = Job(source, _accumulation(source, extractor, total, splits), start, stop, shard=shard,
                  checkpoint=checkpoint, resume=resume, overwrite=overwrite, fingerprint=fingerprint)
        return job.run(batch_size=batch_size, num_workers=default_workers() if num_workers is None else num_workers,
                       skip_bad=skip_bad, progress=progress, checkpoint_every=checkpoint_every,
                       require_samples=require_samples)


class Job:
    """One source's range ``start`` … ``stop - 1`` into statistics, with the optional checkpoint: the
    statistics plus the next item to read, saved atomically."""

    def __init__(self, source: Source, accumulation, start: int, stop: int, *, shard=None, checkpoint=None,
                 resume: bool = False, overwrite: bool = False, fingerprint: str = "stat"):
        self.source, self.accumulation, self.start, self.stop = source, accumulation, start, stop
        self.checkpoint = None if checkpoint is None else Checkpoint(
            checkpoint, source, total=len(source), start=start, stop=stop, shard=shard,
            feature_space=accumulation.feature_space, fingerprint=fingerprint, unit=accumulation.unit)
        if resume and self.checkpoint is None:
            raise ValueError("resume needs a checkpoint to continue from")
        self.stats: Any = None
        self.progress = Progress(start)
        if self.checkpoint is not None:
            saved, self.progress = self.checkpoint.begin(resume, overwrite)
            if saved is not None:
                if accumulation.scores is not None:
                    raise ValueError("resumable jobs compute statistics only")
                self.stats = self._load_checkpoint()

    def _load_checkpoint(self):
        assert self.checkpoint is not None
        if isinstance(self.accumulation, _Networks):
            from fastfid.representations import SpaceStats

            stats: Any = SpaceStats.load(self.checkpoint.path, allow_partial=True)
        else:
            stats = FeatureStats.load(self.checkpoint.path, allow_partial=True)
        if stats.count == 0:
            return None  # nothing was added yet; the width is learnt again from the first batch
        device = self.accumulation.device
        return stats.to(device) if device is not None else stats

    def _save(self) -> None:
        assert self.checkpoint is not None
        if self.stats is None:
            if not self.accumulation.width_known():
                return  # nothing added yet, and the width is unknown until the first batch: nothing to save
            self.stats = self.accumulation.new_stats()
        self.checkpoint.save(self.stats, self.progress)

    def run(self, *, batch_size, num_workers, skip_bad, progress, checkpoint_every, require_samples=True):
        from tqdm import tqdm

        accumulation, done, unit = self.accumulation, self.progress, self.accumulation.unit
        resumed_at = done.next
        bar = tqdm(total=self.stop - self.start, initial=done.next - self.start,
                   unit="img" if unit == "images" else "row",
                   file=sys.stderr, disable=not progress, desc=Path(self.source.description).name[:30] or "images",
                   leave=False)
        stop_signal = _StopOnSignal(enabled=self.checkpoint is not None)
        last_save = time.monotonic()
        extractor = getattr(accumulation, "extractor", None)
        image_options = {} if extractor is None else dict(
            plans=extractor.plans, num_workers=num_workers, pin_memory=extractor.device.type == "cuda",
            device=extractor.device)
        if extractor is not None:
            extractor.plan(self.stop - done.next, batch_size, logits=accumulation.scores is not None)
        batches = iter(self.source.batches(done.next, self.stop, batch_size=batch_size, **image_options))
        # Until the first batch is through the network (tens of seconds on a CPU), the bar says
        # what is under way instead of sitting at 0 %.
        first_batch = True
        bar.set_postfix_str(f"reading the first {unit}")
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
                        self.stats = accumulation.add(self.stats, batch, done.next)
                    if first_batch:
                        bar.set_postfix_str("", refresh=False)
                        first_batch = False
                    if self.checkpoint is not None:
                        self.checkpoint.note_processed(done.next, done.next + batch.attempted)
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
            kept = (f"{self.checkpoint.done(progress=done)} are saved in {self.checkpoint.path}: --resume / "
                    "resume=True continues" if self.checkpoint is not None and done.next > self.start
                    else "nothing was done, so nothing was saved")
            raise Interrupted(f"stopped by signal; {kept}")
        if done.bad:
            warnings.warn(f"{counted(done.skipped, 'unreadable image')} of {self.source.description} "
                          f"{'was' if done.skipped == 1 else 'were'} skipped: {first_items(done.bad)}",
                          RuntimeWarning, stacklevel=4)
        if require_samples and self.start < self.stop and (self.stats is None or self.stats.count == 0):
            whole = (self.start, self.stop) == (0, len(self.source))
            span = f"its {counted(self.stop - self.start, unit[:-1])}" if whole else \
                f"its items {self.start} … {self.stop - 1}"
            raise ValueError(f"{self.source.description}: none of {span} could be read" + (
                f" ({first_items(done.bad)})" if done.bad else ""))
        if self.stats is None:  # an empty shard (more ranks than images): it merges as nothing
            self.stats = accumulation.new_stats()
        return self.stats, accumulation.scores, done.bad

    def _save_after_failure(self, error: BaseException, resumed_at: int) -> None:
        """A failed job keeps what it did, and says so with the command that continues; one that did
        nothing leaves no checkpoint of zero progress (which a fixed rerun would have to delete)."""
        if self.checkpoint is None or self.progress.next == self.start:
            return
        if self.progress.next > resumed_at:
            self._save()
        note = self.checkpoint.failure_note(self.progress)
        if hasattr(error, "add_note"):
            error.add_note(note)
        else:  # Python 3.10: the same attribute, which the command line prints
            error.__notes__ = [*getattr(error, "__notes__", []), note]


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

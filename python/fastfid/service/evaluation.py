"""Evaluations: FID against a stored reference (factorised once and cached), its error bar when
shards or features allow one, the feature-space check, and a verdict against the model's previous
checkpoint or a named baseline. The numbers are fastfid's own: ``Reference.distance``,
``fid_with_error`` and ``compare``; nothing here computes a distance of its own.
"""

from __future__ import annotations

import enum
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from fastfid._version import __version__
from fastfid.distance import Reference
from fastfid.representations import fdr_of_distances
from fastfid.service.auth import Principal
from fastfid.service.errors import Refusal
from fastfid.service.store import Store
from fastfid.service.uploads import KEY_SCOPE_CHARS, ONE_SPACE, Upload
from fastfid.stats import FeatureStats
from fastfid.uncertainty import compare, fid_with_error

ERROR_BAR_GROUPS = 20  # jackknife groups when features are posted (fastfid fid --error-bars' default)
_Z95 = 1.959963984540054  # the normal 97.5 % quantile: a 95 % interval from two standard errors


class InputKind(enum.Enum):
    """What a submission posts (its value is what records store as ``input_kind``)."""

    STATS = "stats"
    SHARDS = "shards"
    FEATURES = "features"


@dataclass
class Submission:
    """What a client posted: its uploads (inspected, not yet read) and what they are of. The arrays
    arrive in ``stats``, ``shards`` or ``features`` when :meth:`read` reads them, after every check
    that can be made from the uploads' declarations."""

    model: str
    checkpoint: str
    reference: str
    kind: InputKind
    uploads: list[Upload]
    space: str = ONE_SPACE
    """The space of the uploads this submission evaluates (ONE_SPACE for files of one space)."""
    stats: FeatureStats | None = None
    shards: list[FeatureStats] = field(default_factory=list)
    features: np.ndarray | None = None
    feature_space: str | None = None
    reference_version: int | None = None
    train_seed: int | None = None
    sample_seed: int | None = None
    baseline: str | None = None
    idempotency_key: str | None = None
    per_space: dict[str, "Submission"] = field(default_factory=dict)
    """A file of several spaces: one submission per space, against the reference ``REFERENCE.SPACE``."""
    validation_fd: dict[str, float] = field(default_factory=dict)
    reference_record: dict | None = None
    """The reference's record, read once from the store by :func:`check_against_reference`."""

    @property
    def inputs_sha256(self) -> list[str]:
        return [upload.sha256 for upload in self.uploads]

    def dim(self) -> int:
        """The dim the uploads declare for this submission's space."""
        dims = {upload.spaces[self.space].dim for upload in self.uploads}
        if len(dims) > 1:
            raise Refusal(422, f"the shards have different dims: {sorted(dims)}")
        return dims.pop()

    def declared_space(self) -> str | None:
        """The feature space the files name, or the ``feature_space`` field for files that name none."""
        spaces = {space for upload in self.uploads if (space := upload.spaces[self.space].feature_space)}
        if len(spaces) > 1:
            raise Refusal(422, f"the shards come from different feature spaces: {sorted(spaces)}")
        return agreed_space(spaces.pop() if spaces else None, self.feature_space)

    def read(self) -> None:
        """Read the uploads' arrays (every space of a file of several spaces at once)."""
        if self.kind is InputKind.FEATURES:
            self.features = self.uploads[0].read_features()
            return
        if not self.per_space:
            self.shards = [upload.read_stats() for upload in self.uploads]
        else:
            contents = [upload.read_spaces() for upload in self.uploads]
            for name, part in self.per_space.items():
                part.shards = [content[name] for content in contents]
        for part in self.per_space.values() or [self]:
            if part.kind is InputKind.STATS:
                part.stats = part.shards.pop()


def agreed_space(in_file: str | None, declared: str | None) -> str | None:
    """A file's own feature space, or the one declared for it; both, when they differ, is a 422."""
    if in_file and declared and in_file != declared:
        raise Refusal(422, f"the uploaded file says its features are {in_file!r}, but feature_space says "
                                f"{declared!r}")
    return in_file or declared


def check_reference(stats: FeatureStats) -> None:
    """Refuse, at upload, a reference that every evaluation against it would fail on (and blame its
    client for): fewer than 2 samples, or statistics that fastfid's own distance refuses (not
    finite, not positive semidefinite, too large for float64), tried here on the reference itself."""
    if stats.count is not None and stats.count < 2:
        raise Refusal(422, f"the reference holds {stats.count} sample(s): a covariance needs at least 2")
    try:
        Reference(stats).distance(stats)  # the factorisation, the trace term and their checks
    except (ValueError, RuntimeError, ArithmeticError) as error:
        raise Refusal(422, f"no evaluation could use this reference: {error}") from error
    with np.errstate(over="ignore"):
        squared_norm = float(np.dot(stats.mean, stats.mean))
    if not math.isfinite(squared_norm):  # the mean term against any other mean would overflow
        raise Refusal(422, "no evaluation could use this reference: its mean is too large for float64 "
                                "(its squared norm overflows)")


class ReferenceCache:
    """Factorised references by the SHA-256 of their state, the least recently used dropped first."""

    def __init__(self, store: Store, size: int = 8, on_lookup: Callable[[bool], None] | None = None):
        if size < 1:
            raise ValueError(f"the reference cache holds at least 1 reference, got {size}")
        self._store, self._size, self._on_lookup = store, size, on_lookup
        self._entries: OrderedDict[str, Reference] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, record: dict) -> Reference:
        key = record["state_sha256"]
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._report(True)
                return self._entries[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one factorisation per reference, however many requests wait for it
            with self._lock:
                if key in self._entries:
                    self._report(True)
                    return self._entries[key]
            reference = Reference(self._store.load_stats(key, record["file_sha256"]))
            with self._lock:
                self._entries[key] = reference
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
                self._loading.pop(key, None)
                self._report(False)
        return reference

    def __len__(self) -> int:
        return len(self._entries)

    def _report(self, hit: bool) -> None:
        if self._on_lookup is not None:
            self._on_lookup(hit)


def jackknife_replicates(uploads: list[Upload]) -> list[int]:
    """The dims of the extra FDs a post costs: features of enough rows for an error bar cost the
    jackknife's ERROR_BAR_GROUPS replicates besides the FD itself."""
    return [declared.dim for upload in uploads for declared in upload.spaces.values()
            for _ in range(ERROR_BAR_GROUPS if (declared.rows or 0) >= 2 * ERROR_BAR_GROUPS else 0)]


def check_against_reference(store: Store, submission: Submission) -> None:
    """Read each space's reference record once (kept in ``reference_record``) and check, from the
    uploads' declarations alone, that its feature space and dim are the reference's: before any
    array is read."""
    for part in (submission.per_space or {ONE_SPACE: submission}).values():
        reference = store.reference(part.reference, part.reference_version)
        _checked_space(part, reference)
        if part.dim() != reference["dim"]:
            raise Refusal(422, f"the uploads have dim {part.dim()}, but reference {reference['name']!r} has dim "
                               f"{reference['dim']}")
        part.reference_record = reference


def evaluate(store: Store, cache: ReferenceCache, submission: Submission, submitter: Principal) -> tuple[dict, bool]:
    """Compute and store one evaluation (its reference checked and read by check_against_reference,
    its arrays by Submission.read); returns (record, created). A retried post (same idempotency key)
    returns the stored record without computing again."""
    replayed, record = _prepared(store, cache, submission, submitter)
    if replayed is not None:
        return replayed, False
    return _kept(store.add_evaluation(record), submission)


def _kept(added: tuple[dict, bool], submission: Submission) -> tuple[dict, bool]:
    """What the store kept of a new record: it, or the record of a concurrent retry that won (checked
    as any replay is)."""
    stored, created = added
    return (stored, True) if created else (_replayed(stored, submission), False)


def _prepared(store: Store, cache: ReferenceCache, submission: Submission,
              submitter: Principal) -> tuple[dict | None, dict]:
    """(the stored record of a retried post, or None; the record to store, computed when there is none)."""
    key = None if submission.idempotency_key is None else scoped_key(submitter.id, submission.idempotency_key)
    if key is not None:
        stored = store.find_evaluation(key)
        if stored is not None:
            return _replayed(stored, submission), {}
    reference = submission.reference_record
    assert reference is not None, "check_against_reference reads the reference first"
    result = _fid(cache.get(reference), submission)
    verdict = _verdict(store, submission, result)
    record = dict(
        idempotency_key=key, model=submission.model, checkpoint=submission.checkpoint,
        train_seed=submission.train_seed, sample_seed=submission.sample_seed, reference=reference["name"],
        reference_version=reference["version"], reference_sha256=reference["state_sha256"],
        feature_space=reference["feature_space"], dim=reference["dim"], input_kind=submission.kind.value,
        inputs_sha256=submission.inputs_sha256, verdict=verdict, fastfid_version=__version__, submitter=submitter.name,
        created=time.time(), **result)
    return None, record


def split_by_space(submission: Submission, validation_fd: dict[str, float]) -> None:
    """Fill ``submission.per_space`` from uploads of several spaces (one stats file or shards, all of
    the same spaces): one submission per space against ``REFERENCE.SPACE``, with the same inputs."""
    names = list(submission.uploads[0].spaces)
    if any(list(upload.spaces) != names for upload in submission.uploads):
        raise Refusal(422, "the shards hold different spaces: "
                           f"{sorted({', '.join(upload.spaces) for upload in submission.uploads})}")
    if submission.feature_space is not None or submission.reference_version is not None:
        raise Refusal(422, "a file of several spaces names each space's features, and each space has its own "
                           "reference: omit feature_space and reference_version")
    unknown = sorted(set(validation_fd) - set(names))
    if unknown:
        raise Refusal(422, f"validation_fd names {', '.join(unknown)}, which the upload does not hold")
    if validation_fd and set(validation_fd) != set(names):
        raise Refusal(422, f"validation_fd must give every space's valFD for FDr^k: {', '.join(names)}")
    key = submission.idempotency_key
    if key is not None and len(key) + 1 + max(map(len, names)) > 200 - KEY_SCOPE_CHARS:
        raise Refusal(422, "Idempotency-Key: too long to name each space's evaluation (KEY.SPACE)")
    for name in names:
        submission.per_space[name] = replace(
            submission, reference=f"{submission.reference}.{name}", space=name,
            idempotency_key=None if key is None else f"{key}.{name}", per_space={}, validation_fd={})
    submission.validation_fd = dict(validation_fd)


def evaluate_spaces(store: Store, cache: ReferenceCache, submission: Submission,
                    submitter: Principal) -> tuple[dict, bool]:
    """One evaluation per space, stored in one transaction: every space's or none (a space that
    fails leaves nothing behind, and a corrected retry with the same key is a new post); with valFDs,
    FDr per space and FDr^k, their mean."""
    prepared = {name: _prepared(store, cache, part, submitter) for name, part in submission.per_space.items()}
    new = [name for name, (replayed, _) in prepared.items() if replayed is None]
    added = dict(zip(new, store.add_evaluations([prepared[name][1] for name in new])))
    done = {name: (replayed, False) if replayed is not None else _kept(added[name], submission.per_space[name])
            for name, (replayed, _) in prepared.items()}
    records = {name: record for name, (record, _) in done.items()}
    result: dict = {"spaces": records}
    if submission.validation_fd:
        ratios = fdr_of_distances({name: (records[name]["fid"], submission.validation_fd[name]) for name in records})
        summary = ratios.as_dict()
        result["fdr"] = {"value": summary.pop("fdr"), **summary}
    return result, any(created for _, created in done.values())


def scoped_key(token_id: int | None, key: str) -> str:
    """How a client's Idempotency-Key is stored: behind its token's id (hashed to a fixed length), so
    that one token's key never finds another token's record, even of a token of the same name."""
    return f"{hashlib.sha256(f'token {token_id}'.encode()).hexdigest()[:KEY_SCOPE_CHARS - 1]}:{key}"


def _replayed(stored: dict, submission: Submission) -> dict:
    """The stored record of a retried post; the same key with other inputs is a client's mistake
    that must not silently lose the second submission: 409, naming the first."""
    asked = (submission.model, submission.checkpoint, submission.reference, submission.train_seed,
             submission.sample_seed, submission.kind.value, submission.inputs_sha256)
    kept = (stored["model"], stored["checkpoint"], stored["reference"], stored["train_seed"], stored["sample_seed"],
            stored["input_kind"], stored["inputs_sha256"])
    version = submission.reference_version
    if asked != kept or (version is not None and version != stored["reference_version"]):
        raise Refusal(409, f"Idempotency-Key {submission.idempotency_key!r} was already used for evaluation "
                                f"{stored['id']} ({stored['model']} @ {stored['checkpoint']}) with other inputs; "
                                "use a new key for a new submission")
    return stored


def _checked_space(submission: Submission, reference: dict) -> str:
    space = submission.declared_space()
    if space is None:
        raise Refusal(422, f"the posted {submission.kind.value} name no feature space (features, shards and the files "
                                "of pytorch-fid or clean-fid carry none): pass feature_space, e.g. the reference's "
                                f"{reference['feature_space']!r}, "
                                "if that is what they are")
    if space != reference["feature_space"]:
        raise Refusal(422, f"feature-space mismatch: the posted {submission.kind.value} are {space!r}, reference "
                                f"{reference['name']!r} is {reference['feature_space']!r}; their FID would not be "
                                "comparable, so none was computed")
    return space


def _fid(reference: Reference, submission: Submission) -> dict:
    """FID, and with shards or enough features a jackknife error bar."""
    stats: FeatureStats | None
    if submission.kind is InputKind.FEATURES:
        features = submission.features
        assert features is not None
        if features.shape[0] >= 2 * ERROR_BAR_GROUPS:
            return _with_error(fid_with_error(features, reference, groups=ERROR_BAR_GROUPS), features.shape[0])
        stats = FeatureStats.from_features(features)
    elif submission.kind is InputKind.SHARDS and len(submission.shards) >= 2:
        return _with_error(fid_with_error(submission.shards, reference), sum(s.count or 0 for s in submission.shards))
    else:
        stats = submission.stats if submission.kind is InputKind.STATS else FeatureStats.merged(submission.shards)
    assert stats is not None
    if stats.count is not None and stats.count < 2:
        raise Refusal(422, f"FID needs statistics of at least 2 samples, got {stats.count}")
    return dict(fid=reference.distance(stats), standard_error=None, interval_low=None, interval_high=None,
                groups=None, count=stats.count)


def _with_error(result, count: int) -> dict:
    return dict(fid=result.value, standard_error=result.standard_error, interval_low=result.interval[0],
                interval_high=result.interval[1], groups=result.groups, count=count)


# --- verdicts ------------------------------------------------------------------------------------
def _verdict(store: Store, submission: Submission, result: dict) -> dict | None:
    """The new result against the model's previous checkpoint (or the named baseline): seed panels
    through fastfid.compare when both sides have two or more training seeds, else the two error
    bars; None when there is nothing to compare with. Each side costs the database one indexed
    read of that checkpoint's evaluations, however long the model's history."""
    against = _baseline(store, submission)
    if against is None:
        return None
    other_model, other_checkpoint = against
    if other_model == submission.model and other_checkpoint == submission.checkpoint:
        return None
    panel_a = _seed_means(store.seed_panel(other_model, submission.reference, other_checkpoint))
    panel_b = _seed_means(store.seed_panel(submission.model, submission.reference, submission.checkpoint),
                          (submission.train_seed, result["fid"]))
    base = {"against": {"model": other_model, "checkpoint": other_checkpoint}}
    if len(panel_a) >= 2 and len(panel_b) >= 2:
        verdict = compare(panel_a, panel_b)
        word = {"A better": "worse", "B better": "better"}.get(verdict.verdict, "inconclusive")
        return base | dict(verdict=word, gap=-verdict.gap, interval=[-verdict.interval[1], -verdict.interval[0]],
                           method="seed panels", reason=verdict.reason.replace("B − A", "previous − current"))
    previous = store.latest_evaluation(other_model, submission.reference, other_checkpoint)
    assert previous is not None  # _baseline found the checkpoint through its evaluations
    gap = result["fid"] - previous["fid"]
    if previous["standard_error"] is None or result["standard_error"] is None:
        return base | dict(verdict=None, gap=gap, interval=None, method=None,
                           reason="no error bars on both sides: post shards or features (a jackknife error bar), "
                                  "or two or more training seeds per checkpoint, for a verdict")
    half = _Z95 * math.hypot(result["standard_error"], previous["standard_error"])
    interval = [gap - half, gap + half]
    word = "inconclusive" if interval[0] <= 0 <= interval[1] else ("better" if gap < 0 else "worse")
    return base | dict(verdict=word, gap=gap, interval=interval, method="error bars",
                       reason=f"current − previous FID is {gap:+.4g}, 95% interval [{interval[0]:.4g}, "
                              f"{interval[1]:.4g}] from the two jackknife error bars (sampling error only; "
                              "training-seed variance needs seed panels)")


def _baseline(store: Store, submission: Submission) -> tuple[str, str] | None:
    """(model, checkpoint) to compare with: ``baseline`` ("model" or "model@checkpoint"), else the
    model's latest other checkpoint on this reference."""
    if submission.baseline:
        model, _, named = submission.baseline.partition("@")
        checkpoint = named or store.latest_checkpoint(model, submission.reference)
        if checkpoint is None or store.latest_evaluation(model, submission.reference, checkpoint) is None:
            raise Refusal(404, f"baseline {submission.baseline!r} has no evaluations against reference "
                                    f"{submission.reference!r}")
        return model, checkpoint
    checkpoint = store.latest_checkpoint(submission.model, submission.reference, other_than=submission.checkpoint)
    return None if checkpoint is None else (submission.model, checkpoint)


def _seed_means(panel: dict[int, tuple[float, int]], new: tuple[int | None, float] | None = None) -> np.ndarray:
    """FID per training seed (the mean over its sampling seeds), with a result not yet stored."""
    panel = dict(panel)
    if new is not None and new[0] is not None:
        total, count = panel.get(new[0], (0.0, 0))
        panel[new[0]] = (total + new[1], count + 1)
    return np.array([total / count for _, (total, count) in sorted(panel.items())])

"""FeatureStats: streaming, exactly mergeable mean and covariance of a feature stream."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ParamSpec, TypeVar

import numpy as np

from fastfid import _device, _threads
from fastfid._native import core as _core
from fastfid._arrays import as_features, as_mean, as_covariance
from fastfid._typing import Array

if TYPE_CHECKING:
    from fastfid.files.stats import StoredStats

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs the method under the object's lock: the native update takes the count and the arrays
    without the GIL, so two threads updating one object at once would lose samples."""
    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with args[0]._lock:  # type: ignore[attr-defined]  # args[0] is the FeatureStats
            return method(*args, **kwargs)
    return run


class FeatureStats:
    """Count, mean and covariance of features, accumulated batch by batch in float64.

    The state is (n, μ, C) with C = Σ (x − μ)(x − μ)ᵀ, so batches and shards merge exactly
    (Chan, Golub & LeVeque) whatever their sizes, and :meth:`save` / :meth:`load` resume without
    loss. Statistics read from a plain pytorch-fid or clean-fid file (``mu`` and ``sigma`` only)
    have ``count is None``: they can be compared but not updated or merged.

    >>> import numpy as np, fastfid
    >>> stats = fastfid.FeatureStats(4)
    >>> stats.update(np.random.default_rng(0).normal(size=(100, 4)))
    FeatureStats(dim=4, count=100)

    ``device`` (e.g. ``"cuda"``) keeps the state on that torch device: batches there are added by
    the CUDA kernels on the current stream without waiting for them, and ``mean``, ``cov`` and
    ``comoment`` are float64 tensors on the device. A batch with NaN/Inf cannot be refused at
    ``update`` time without a sync: it is left out on the device and the next read raises
    ValueError once, the other samples intact. ``precision="fast"`` (device statistics only) opts in
    to the kernels' fast mode: tensor-core products (TF32 for float32/float64 batches, split-bf16 for
    float16/bfloat16 ones) with float32 partial sums, not exact (the README states the error bounds);
    the default ``"float64"`` is exact. ``to`` another device keeps the precision.

    One object may be updated from several threads: each call holds the object's lock.
    """

    # The state: count (None for a count-less summary), and on the host the mean and the upper
    # co-moment (None while a device state holds them). Typed loosely: which is set depends on
    # where the statistics live, checked at run time.
    _count: Any  # int, or None for a count-less summary
    _mean: Any
    _comoment: Any
    _sigma: Any
    _pending: Any
    _device_state: Any

    __slots__ = ("_dim", "_count", "_mean", "_comoment", "_sigma", "_pending", "_pending_rows", "_device_state",
                 "feature_space", "_lock")

    def __init__(self, dim: int, device=None, *, feature_space: str | None = None, precision: str = "float64"):
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._dim = int(dim)
        self._lock = threading.RLock()
        # What the features are (network, layer, preprocessing), e.g. "FIDInceptionV3(dims=2048, ...) resize=..."
        # or None when unknown: saved with the statistics; merge refuses and fid warns on a mismatch.
        self.feature_space = feature_space
        self._device_state: _device.DeviceStats | None = None
        if device is not None and (str(device) != "cpu" or _device.emulating()):
            import torch

            device = torch.device(device)
            if _device.takes_device_path(device):
                self._device_state = _device.DeviceStats(self._dim, device, precision=precision)
        if _device.check_precision(precision) != "float64" and self._device_state is None:
            raise ValueError(f"precision={precision!r} is an option of device statistics (FeatureStats(dim, "
                             "device='cuda', ...)); on the CPU the statistics are exact float64")
        self._count: int | None = 0
        on_host = self._device_state is None  # a device state keeps its own arrays
        self._mean = np.zeros(self._dim) if on_host else None
        self._comoment: np.ndarray | None = np.zeros((self._dim, self._dim)) if on_host else None  # upper triangle
        self._sigma: np.ndarray | None = None  # only for count-less summaries
        # Small batches wait here (validated, float64) until a native panel is full: one SYRK call
        # per panel instead of one per batch, each of which re-reads the d × d co-moment.
        self._pending: np.ndarray | None = None
        self._pending_rows = 0

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def from_features(cls, features: Array) -> "FeatureStats":
        """Statistics of one (n, d) array of features, on the features' device."""
        if _device.is_device_tensor(features):
            if features.dim() != 2:
                raise ValueError(f"features must be 2-D (samples, dim), got shape {tuple(features.shape)}")
            return cls(features.shape[1], device=features.device).update(features)
        x = as_features(features)
        return cls(x.shape[1]).update(x)

    @classmethod
    def _from_device_state(cls, state: "_device.DeviceStats") -> "FeatureStats":
        """Statistics around an existing device state (tests pass one run by the kernel emulation)."""
        stats = cls(state.dim)
        stats._device_state = state
        stats._mean = stats._comoment = None
        return stats

    @classmethod
    def from_state(cls, count: int, mean, comoment) -> "FeatureStats":
        """Statistics from an exact state: count, mean and co-moment Σ (x − μ)(x − μ)ᵀ."""
        mean = as_mean(mean, "mean")
        comoment = as_covariance(comoment, "comoment")
        if comoment.shape[0] != mean.shape[0]:
            raise ValueError(f"comoment is {comoment.shape}, mean has dim {mean.shape[0]}")
        _core.validate_covariance(comoment, "comoment")
        return cls._adopt_state(count, np.array(mean, dtype=np.float64), np.array(comoment, dtype=np.float64))

    @classmethod
    def _adopt_state(cls, count: int, mean: np.ndarray, upper: np.ndarray) -> "FeatureStats":
        """Statistics around float64 arrays taken as they are (no copy): the mean and a C-ordered
        co-moment of which only the upper triangle is read (as files store it)."""
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        if not (np.isfinite(mean).all() and np.isfinite(upper).all()):
            raise ValueError("the mean or co-moment contains NaN or Inf values")
        if (np.diagonal(upper) < 0).any():
            raise ValueError("the co-moment has negative variances on its diagonal")
        stats = cls(mean.shape[0])
        stats._count = int(count)
        stats._mean, stats._comoment = mean, upper
        return stats

    @classmethod
    def from_mean_cov(cls, mu, sigma) -> "FeatureStats":
        """A summary without a sample count (as in pytorch-fid files): comparable, not mergeable."""
        mu = as_mean(mu, "mu")
        sigma = as_covariance(sigma, "sigma")
        if sigma.shape[0] != mu.shape[0]:
            raise ValueError(f"sigma is {sigma.shape} but mu has dim {mu.shape[0]}")
        _core.validate_covariance(sigma, "sigma")
        stats = cls(mu.shape[0])
        stats._count = None
        stats._mean = np.array(mu, dtype=np.float64)
        stats._comoment = None
        stats._sigma = np.array(sigma, dtype=np.float64)
        return stats

    # --- accumulation --------------------------------------------------------------------------
    @_locked
    def update(self, features: Array) -> "FeatureStats":
        """Add a batch of (n, d) features (numpy or torch, float16/32/64 or bfloat16, any strides).

        On the CPU: one fused native pass, GIL released; batches smaller than a panel are gathered
        first; if it raises, the statistics are unchanged. On a device: the kernels are enqueued on
        the current stream (host inputs are copied there first) and NaN/Inf surface at the next read.
        """
        self._require_exact("update")
        if self._device_state is not None:
            self._device_state.update(features)
            return self
        if _device.is_device_tensor(features):
            raise TypeError(f"the features are on {features.device} but these statistics are on the CPU: create them "
                            f"with FeatureStats({self._dim}, device='{features.device}') to accumulate there")
        x = as_features(features, self._dim)
        rows = x.shape[0]
        panel = _core.panel_rows(self._dim)
        if self._pending_rows + rows <= panel:
            _core.require_finite(x)
            if self._pending is None:
                self._pending = np.empty((panel, self._dim))
            self._pending[self._pending_rows:self._pending_rows + rows] = x
            self._pending_rows += rows
            if self._pending_rows == panel:
                self._flush()
            return self
        self._flush()
        _threads.adapt()
        self._count = _core.accumulate(x, self._count, self._mean, self._comoment)
        return self

    @_locked
    def _flush(self) -> None:
        """Add the gathered small batches to the state (they are finite: checked on arrival).
        A no-op when nothing is gathered, as always for count-less summaries."""
        if self._pending_rows:
            _threads.adapt()
            pending = self._pending[:self._pending_rows]
            self._count = _core.accumulate(pending, self._count, self._mean, self._comoment)
            self._pending_rows = 0

    @classmethod
    def merged(cls, shards: "Sequence[FeatureStats]") -> "FeatureStats":
        """The exact merge of disjoint shards' statistics into new statistics (the shards unchanged)."""
        shards = list(shards)
        if not shards:
            raise ValueError("no statistics to merge")
        total = shards[0].copy()
        for shard in shards[1:]:
            total.merge(shard)
        return total

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Merge another set of statistics into this one, in place."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"can only merge FeatureStats, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge statistics into themselves: every sample would count twice")
        first, second = sorted((self, other), key=id)  # one lock order, whichever merges into which
        with first._lock, second._lock:
            return self._merge(other)

    def _merge(self, other: "FeatureStats") -> "FeatureStats":
        self._check_partner(other, "merge", "into", "be merged")
        if (self._device_state is None) != (other._device_state is None) or (
                self._device_state is not None and self._device_state.device != other._device_state.device):
            raise ValueError(f"cannot merge statistics on {other.device} into statistics on {self.device}: "
                             "move one with .to(device) first")
        if self._device_state is not None:
            self._device_state.merge(other._device_state)
        else:
            self._flush()
            other._flush()
            self._count = _core.merge(self._count, self._mean, self._comoment, other._count, other._mean,
                                      other._comoment)
        self.feature_space = self.feature_space or other.feature_space
        return self

    @_locked
    def remove(self, part: "FeatureStats") -> "FeatureStats":
        """Take out, in place, the statistics of a subset of these samples (a shard that was merged
        in): the merge inverted, exact up to rounding, O(d²). The jackknife's leave-one-out totals."""
        self._check_partner(part, "remove", "from", "be removed")
        if self._device_state is not None or part._device_state is not None:
            raise ValueError("remove works on CPU statistics: use .to('cpu') first")
        self._flush()
        part._flush()
        n, n_part = self._count, part._count
        if n_part >= n:
            raise ValueError(f"cannot remove {n_part} samples from statistics of {n}: a part must be smaller")
        rest = n - n_part
        mean = (self._mean * n - part._mean * n_part) / rest
        delta = part._mean - mean
        whole = self.comoment
        comoment = whole - part.comoment - np.outer(delta, delta) * (rest * n_part / n)
        # Removal cancels: rounding leaves at most a few ulps of the whole's variances below 0.
        # Anything more means the part was never merged into these statistics.
        scale = float(np.max(np.diagonal(whole), initial=0.0))
        if float(np.min(np.diagonal(comoment))) < -1e-9 * scale:
            raise ValueError("the part is not contained in these statistics: removing it leaves negative variances "
                             "(remove only shards that were merged in)")
        self._count, self._mean, self._comoment = rest, mean, comoment
        self.feature_space = self.feature_space or part.feature_space
        return self

    def __sub__(self, other: "FeatureStats") -> "FeatureStats":
        if not isinstance(other, FeatureStats):
            return NotImplemented
        return self.copy().remove(other)

    def __add__(self, other: "FeatureStats") -> "FeatureStats":
        if not isinstance(other, FeatureStats):
            return NotImplemented
        return self.copy().merge(other)

    def __iadd__(self, other: "FeatureStats") -> "FeatureStats":
        if not isinstance(other, FeatureStats):
            return NotImplemented
        return self.merge(other)

    @_locked
    def copy(self) -> "FeatureStats":
        if self._device_state is not None:
            clone = FeatureStats._from_device_state(self._device_state.copy())
            clone.feature_space = self.feature_space
            return clone
        self._flush()
        clone = FeatureStats(self._dim, feature_space=self.feature_space)
        clone._count = self._count
        clone._mean = self._mean.copy()
        clone._comoment = None if self._comoment is None else self._comoment.copy()
        clone._sigma = None if self._sigma is None else self._sigma.copy()
        return clone

    @_locked
    def to(self, device) -> "FeatureStats":
        """A copy of these statistics on another device ("cpu", "cuda", "cuda:1", a torch.device)."""
        self._require_exact("move")
        if str(device) == "cpu" or getattr(device, "type", None) == "cpu":
            if self._device_state is None:
                return self.copy()
            state = self._device_state
            count = state.count()
            if count == 0:
                return FeatureStats(self._dim, feature_space=self.feature_space)
            host = FeatureStats.from_state(count, state.mean.cpu().numpy(), state.symmetric_comoment().cpu().numpy())
            host.feature_space = self.feature_space
            return host
        precision = self._device_state.precision if self._device_state is not None else "float64"
        moved = FeatureStats(self._dim, device=device, feature_space=self.feature_space, precision=precision)
        source = self if self._device_state is None else self.to("cpu")
        source._flush()
        if source._count:
            import torch

            target = moved._device_state
            target.mean.copy_(torch.as_tensor(source._mean))
            target.comoment.copy_(torch.as_tensor(source._comoment))
            target.counters[0] = source._count
        return moved

    # --- results -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self):
        """"cpu", or the torch.device holding the state."""
        return "cpu" if self._device_state is None else self._device_state.device

    @property
    @_locked
    def count(self) -> int | None:
        """Number of samples, or None for a summary read from a mu/sigma-only file."""
        if self._device_state is not None:
            return self._device_state.count()
        return None if self._count is None else self._count + self._pending_rows

    @property
    def mergeable(self) -> bool:
        return self._count is not None

    @property
    @_locked
    def mean(self) -> np.ndarray:
        """The mean, float64 (a copy; a tensor on the statistics' device)."""
        if self._device_state is not None:
            if self.count == 0:
                raise ValueError("the statistics are empty: update them with features first")
            return self._device_state.mean.clone()
        self._flush()
        if self._count == 0:
            raise ValueError("the statistics are empty: update them with features first")
        return self._mean.copy()

    @property
    @_locked
    def comoment(self) -> np.ndarray:
        """Σ (x − μ)(x − μ)ᵀ, float64, symmetric (a copy; a tensor on the statistics' device)."""
        self._require_exact("give a co-moment")
        if self._device_state is not None:
            self._device_state.count()  # reports NaN/Inf batches left out on the device
            return self._device_state.symmetric_comoment()
        self._flush()
        full = self._comoment.copy()
        _core.symmetrize_upper(full)
        return full

    @property
    @_locked
    def cov(self) -> np.ndarray:
        """The unbiased covariance (divisor n − 1), float64, symmetric (a copy)."""
        if self._sigma is not None:
            return self._sigma.copy()
        self._flush()
        count: int = self.count  # type: ignore[assignment]  # a count-less summary returned above
        if count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, the statistics have {count}")
        full = self.comoment
        full /= count - 1
        return full

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """The covariance with divisor n − ``ddof``: 1 (:attr:`cov`: pytorch-fid, clean-fid, ADM, EDM,
        EDM2) or 0 (the population covariance of StyleGAN2-ADA's and StyleGAN3's metrics). A summary
        read from a file without its count (mu, sigma) has only the divisor it was written with."""
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 (divisor n) or 1 (divisor n - 1), got {ddof!r}")
        if ddof == 1:
            return self.cov
        if self._sigma is not None:
            raise ValueError("these statistics are a (mu, sigma) summary without a sample count: their covariance "
                             "keeps the divisor it was written with, so another ddof cannot be applied")
        count: int = self.count  # type: ignore[assignment]  # a count-less summary was refused above
        if count < 1:
            raise ValueError("the statistics are empty: update them with features first")
        full = self.comoment
        full /= count
        return full

    @_locked
    def scale(self) -> tuple[float, float]:
        """(mean square, variance) of the features, each averaged over the dimensions, in O(d): what
        tells vanishing features (both about 0) from a set whose samples are all alike (variance 0)."""
        if self._sigma is not None:
            mean, trace, count = self._mean, float(np.trace(self._sigma)), None
        elif self._device_state is not None:
            state = self._device_state
            mean = state.mean.double().cpu().numpy()
            trace, count = float(state.symmetric_comoment().diagonal().sum()), self.count
        else:
            self._flush()
            mean, trace, count = self._mean, float(np.trace(self._comoment)), self._count
        if count is not None and count == 0:
            raise ValueError("the statistics are empty: update them with features first")
        variance = trace if count is None else trace / max(count - 1, 1)
        second = trace if count is None else trace / count
        with np.errstate(over="ignore"):  # a mean beyond float64's range: inf, which the distance refuses
            return (float(mean @ mean) + second) / self.dim, variance / self.dim

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, progress: dict | None = None) -> None:
        """Write a .npz with ``mu`` and ``sigma`` (pytorch-fid / clean-fid readable) plus the exact
        state to resume and merge; the file is replaced atomically. ``progress``: a job's record, as
        its checkpoints carry it (while it is not complete, the file holds no ``mu``/``sigma``)."""
        from fastfid.files.stats import save_stats

        save_stats(self.to_stored(), path, progress)

    @classmethod
    def load(cls, path: "str | os.PathLike | BinaryIO", *, allow_partial: bool = False) -> "FeatureStats":
        """Read fastfid's .npz, or a plain pytorch-fid / clean-fid one (``mu``, ``sigma``), from a path
        or a seekable binary stream. The checkpoint of an unfinished job is refused unless
        ``allow_partial``; OSError for unreadable or corrupt files, ValueError for bad contents."""
        from fastfid.files.archive import name_of
        from fastfid.files.stats import read_stats

        return cls.from_stored(read_stats(path, allow_partial=allow_partial), name_of(path))

    @_locked
    def to_stored(self) -> "StoredStats":
        """These statistics as the plain host arrays fastfid.files writes (the co-moment's upper
        triangle as the state holds it: no copy on the CPU)."""
        from fastfid.files.stats import StoredStats

        if self._device_state is not None:
            return self.to("cpu").to_stored()
        self._flush()
        if self._count is None:
            return StoredStats(self._mean, None, sigma=self._sigma, feature_space=self.feature_space)
        return StoredStats(self._mean, self._count, self._comoment, feature_space=self.feature_space)

    @classmethod
    def from_stored(cls, stored: "StoredStats", source: object = "statistics") -> "FeatureStats":
        """Statistics from what fastfid.files read (the arrays are taken as they are); ``source`` names
        the file in messages."""
        try:
            if stored.count is None:
                stats = cls.from_mean_cov(stored.mean, stored.sigma)
            elif stored.count == 0:  # a resumable job saved before its first sample
                stats = cls(stored.dim)
            else:
                assert stored.upper is not None  # exact statistics carry their co-moment
                stats = cls._adopt_state(stored.count, stored.mean, stored.upper)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{source}: {error}") from error
        stats.feature_space = stored.feature_space
        return stats

    def state_sha256(self) -> str:
        """SHA-256 of the exact state (count, mean, co-moment): equal for the same samples, in any file."""
        from fastfid.files.stats import state_digest

        return state_digest(self.to_stored())

    @_locked
    def __getstate__(self):
        if self._device_state is not None:  # pickled as its CPU copy, restored onto the device
            return {"host": self.to("cpu").__getstate__(), "device": str(self._device_state.device)}
        self._flush()
        transient = ("_pending", "_device_state", "_lock")
        return {name: getattr(self, name) for name in self.__slots__ if name not in transient}

    def __setstate__(self, state):
        if "device" in state:
            host = FeatureStats.__new__(FeatureStats)
            host.__setstate__(state["host"])
            moved = host.to(state["device"])
            state = {name: getattr(moved, name) for name in self.__slots__ if name not in ("_pending", "_lock")}
        for name, value in state.items():
            setattr(self, name, value)
        self._pending = None
        self._lock = threading.RLock()
        self._device_state = state.get("_device_state")

    def all_reduce(self, group=None) -> "FeatureStats":
        """Merge, in place and exactly, the statistics of every rank of a torch.distributed process
        group (all ranks must call it; every rank ends with the total). NCCL groups communicate on the
        current CUDA device, gloo groups on the CPU. Memory: a few d × d buffers, never features."""
        from fastfid.distributed import all_reduce_stats

        all_reduce_stats(self, group)
        return self

    @_locked
    def _set_exact_state(self, count: int, mean, comoment) -> None:
        """Replace the state (float64 arrays on the CPU, tensors on the statistics' device)."""
        if self._device_state is not None:
            state = self._device_state
            state.mean.copy_(mean)
            state.comoment.copy_(comoment)
            state.counters[0] = count
            return
        self._pending_rows = 0
        self._count, self._mean, self._comoment = int(count), np.array(mean, dtype=np.float64), \
            np.array(comoment, dtype=np.float64, order="C")

    # --- helpers -------------------------------------------------------------------------------
    def _check_partner(self, other: "FeatureStats", action: str, preposition: str, passive: str) -> None:
        """What merge and remove both require of the other statistics; raises before anything changes."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"can only {action} FeatureStats, got {type(other).__name__}")
        if other._dim != self._dim:
            raise ValueError(f"cannot {action} statistics of dim {other._dim} {preposition} dim {self._dim}")
        self._require_exact(action if action == "merge" else f"{action} a part")
        other._require_exact(passive)
        if self.feature_space and other.feature_space and self.feature_space != other.feature_space:
            raise ValueError(f"cannot {action} statistics of different features: {other.feature_space!r} "
                             f"and {self.feature_space!r}")

    def _require_exact(self, action: str) -> None:
        if self._count is None:
            raise ValueError(
                f"cannot {action}: these statistics come from a mu/sigma-only file (pytorch-fid / clean-fid), "
                "whose sample count is unknown; recompute them with fastfid to get mergeable statistics"
            )

    def __repr__(self) -> str:
        if self._device_state is not None:
            return f"FeatureStats(dim={self._dim}, device='{self._device_state.device}')"  # no sync for a repr
        return f"FeatureStats(dim={self._dim}, count={'unknown' if self._count is None else self.count})"

"""FDr^k: Fréchet distances normalised per representation space, averaged over k spaces.

FDr-X = FD-X / valFD-X, where valFD-X is the FD between held-out real images (e.g. ImageNet val)
and the reference statistics in space X. The ratio puts spaces whose FDs differ by orders of
magnitude (Inception ~1.7, ConvNeXt ~57 for real images) on one footing; FDr^k is the arithmetic
mean over the k spaces (Representation Fréchet Loss, arXiv 2604.28190).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

from fastfid.distance import fid
from fastfid.stats import FeatureStats

__all__ = ["FDrResult", "SpaceFDr", "SpaceStats", "fdr", "fdr_of_distances"]


@dataclass(frozen=True)
class SpaceFDr:
    fd: float
    """FD between the generated and the reference statistics in this space."""
    validation_fd: float
    """FD between held-out real data and the reference in this space (the normaliser)."""
    ratio: float
    """fd / validation_fd."""


@dataclass(frozen=True)
class FDrResult:
    value: float
    """FDr^k: the mean of the ratios over the spaces."""
    spaces: dict[str, SpaceFDr]

    @property
    def k(self) -> int:
        return len(self.spaces)

    def as_dict(self) -> dict:
        """FDr^k, k and each space's FD, valFD and FDr, as the command line and the service report them."""
        return {"fdr": self.value, "k": self.k,
                "spaces": {name: {"fd": r.fd, "validation_fd": r.validation_fd, "fdr": r.ratio}
                           for name, r in self.spaces.items()}}


def fdr(spaces: Mapping[str, tuple]) -> FDrResult:
    """FDr per space and FDr^k, their mean.

    ``spaces`` maps a space's name to ``(generated, reference, validation)``: statistics
    (FeatureStats, a ``.npz`` path or a ``(mu, sigma)`` pair) of generated and reference features
    in that space, and either statistics of held-out real features or their published valFD as a
    number.
    """
    if not isinstance(spaces, Mapping) or not spaces:
        raise ValueError("spaces must map at least one space name to (generated, reference, validation)")
    distances = {}
    for name, entry in spaces.items():
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(f"space {name!r}: expected (generated, reference, validation), got {entry!r}")
        generated, reference, validation = entry
        distances[name] = (fid(generated, reference),
                           float(validation) if _is_number(validation) else fid(validation, reference))
    return fdr_of_distances(distances)


def fdr_of_distances(distances: Mapping[str, tuple[float, float]]) -> FDrResult:
    """FDr per space and FDr^k from each space's (FD, valFD), already computed (e.g. by the service)."""
    results = {}
    for name, (distance, validation_fd) in distances.items():
        if not validation_fd > 0:
            raise ValueError(f"space {name!r}: the validation FD is {validation_fd}; it must be positive to "
                             "normalise by")
        results[str(name)] = SpaceFDr(distance, validation_fd, distance / validation_fd)
    value = sum(r.ratio for r in results.values()) / len(results)
    return FDrResult(value, results)


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


class SpaceStats(Mapping):
    """Statistics of several representation spaces from one pass over the images: a mapping of
    space name → :class:`FeatureStats`, in the order asked, with the valFDs that travel with them in
    a file (``validation_fd``: name → valFD, for :meth:`fdr`)."""

    def __init__(self, spaces: Mapping[str, FeatureStats], validation_fd: Mapping[str, float] | None = None):
        self._spaces = dict(spaces)
        if not self._spaces:
            raise ValueError("SpaceStats needs the statistics of at least one space")
        self.validation_fd = {str(k): float(v) for k, v in (validation_fd or {}).items()}

    def __getitem__(self, name: str) -> FeatureStats:
        try:
            return self._spaces[name]
        except KeyError:
            raise KeyError(f"no statistics of space {name!r}; these are of {', '.join(self._spaces)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._spaces)

    def __len__(self) -> int:
        return len(self._spaces)

    def __repr__(self) -> str:
        return f"SpaceStats({', '.join(f'{k}: {v.count} × {v.dim}' for k, v in self._spaces.items())})"

    @property
    def count(self) -> int | None:
        """Samples seen (the same in every space: one pass)."""
        return next(iter(self._spaces.values())).count

    @property
    def device(self):
        return next(iter(self._spaces.values())).device

    @property
    def feature_space(self) -> str:
        return "; ".join(f"{name}: {stats.feature_space}" for name, stats in self._spaces.items())

    def update(self, features: Sequence) -> None:
        """Add one batch of features per space, in order."""
        if len(features) != len(self._spaces):
            raise ValueError(f"{len(features)} feature batches for {len(self._spaces)} spaces")
        for stats, batch in zip(self._spaces.values(), features):
            stats.update(batch)

    def to(self, device) -> "SpaceStats":
        return SpaceStats({k: v.to(device) for k, v in self._spaces.items()}, self.validation_fd)

    def all_reduce(self) -> None:
        for stats in self._spaces.values():
            stats.all_reduce()

    def merge(self, other: "SpaceStats") -> "SpaceStats":
        """Merge another shard's statistics into these, in place (as FeatureStats.merge): the same
        spaces on both sides."""
        if not isinstance(other, SpaceStats) or list(other) != list(self):
            raise ValueError(f"cannot merge statistics of spaces {list(other)} into {list(self)}")
        for name, stats in self._spaces.items():
            stats.merge(other[name])
        self.validation_fd = {**other.validation_fd, **self.validation_fd}
        return self

    def save(self, path, progress: dict | None = None) -> None:
        """One file of every space's statistics and the valFDs, written atomically (``progress``: a job's
        record, as FeatureStats' checkpoints carry it)."""
        from fastfid.files.spaces import save_spaces

        save_spaces({name: stats.to_stored() for name, stats in self._spaces.items()}, path,
                    validation_fd=self.validation_fd, progress=progress)

    @classmethod
    def load(cls, path, *, allow_partial: bool = False) -> "SpaceStats":
        """A file of several spaces (a path or a seekable stream); a single space's statistics file
        gives that space alone, named by its feature space (``"features"`` when it names none); an EDM2
        reference pickle gives ``inception`` and ``dinov2-vit-l14``."""
        from fastfid.files import format as keys
        from fastfid.files.archive import name_of, open_npz
        from fastfid.files.nvidia import is_pickle, read_reference_pickle
        from fastfid.files.spaces import spaces_from_archive
        from fastfid.files.stats import stats_from_archive
        from fastfid.models.spaces import space_of
        from fastfid.references import resolve

        path = resolve(path)  # a reference's name: its checked file
        if is_pickle(path):
            pickled, _ = read_reference_pickle(path)
            return cls({name: FeatureStats.from_stored(part, f"{name_of(path)} [{name}]")
                        for name, part in pickled.items()})
        with open_npz(path) as archive:
            if keys.SPACES in archive:
                stored, validation_fd = spaces_from_archive(archive, allow_partial=allow_partial)
                return cls({name: FeatureStats.from_stored(part, f"{archive.path} [{name}]")
                            for name, part in stored.items()}, validation_fd)
            single = FeatureStats.from_stored(stats_from_archive(archive, allow_partial=allow_partial), archive.path)
        return cls({space_of(single.feature_space) or "features": single})

    def fdr(self, reference: "SpaceStats", validation_fd: Mapping[str, float] | None = None) -> FDrResult:
        """FDr per space and FDr^k of these (generated) statistics against ``reference``, each space
        normalised by ``validation_fd[name]`` or else the valFD the reference carries."""
        given = {**reference.validation_fd, **dict(validation_fd or {})}
        missing = [name for name in self if name not in given]
        if missing:
            raise ValueError(f"no valFD for {', '.join(missing)}: give it (--valfd NAME=VALUE / validation_fd=) or "
                             "store it in the reference file (fastfid stats ... --valfd NAME=VALUE)")
        absent = [name for name in self if name not in reference]
        if absent:
            raise ValueError(f"the reference holds no statistics of {', '.join(absent)}; it has {', '.join(reference)}")
        return fdr({name: (stats, reference[name], given[name]) for name, stats in self.items()})

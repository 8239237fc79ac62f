"""FDr^k: Fréchet distances normalised per representation space, averaged over k spaces.

FDr-X = FD-X / valFD-X, where valFD-X is the FD between held-out real images (e.g. ImageNet val)
and the reference statistics in space X. The ratio puts spaces whose FDs differ by orders of
magnitude (Inception ~1.7, ConvNeXt ~57 for real images) on one footing; FDr^k is the arithmetic
mean over the k spaces (Representation Fréchet Loss, arXiv 2604.28190).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

from fastfid.distance import fid

__all__ = ["FDrResult", "SpaceFDr", "fdr"]


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


def fdr(spaces: Mapping[str, tuple]) -> FDrResult:
    """FDr per space and FDr^k, their mean.

    ``spaces`` maps a space's name to ``(generated, reference, validation)``: statistics
    (FeatureStats, a ``.npz`` path or a ``(mu, sigma)`` pair) of generated and reference features
    in that space, and either statistics of held-out real features or their published valFD as a
    number.
    """
    if not isinstance(spaces, Mapping) or not spaces:
        raise ValueError("spaces must map at least one space name to (generated, reference, validation)")
    results = {}
    for name, entry in spaces.items():
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValueError(f"space {name!r}: expected (generated, reference, validation), got {entry!r}")
        generated, reference, validation = entry
        distance = fid(generated, reference)
        validation_fd = float(validation) if _is_number(validation) else fid(validation, reference)
        if not validation_fd > 0:
            raise ValueError(f"space {name!r}: the validation FD is {validation_fd}; it must be positive to normalise by")
        results[str(name)] = SpaceFDr(distance, validation_fd, distance / validation_fd)
    value = sum(r.ratio for r in results.values()) / len(results)
    return FDrResult(value, results)


def _is_number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)

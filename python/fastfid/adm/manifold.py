"""ADM's precision and recall (its ManifoldEstimator, after Kynkäänniemi et al.), with its distances
computed in float16 as its TensorFlow graph computes them, op by op:

1. both feature blocks cast to half;
2. squares in half (each the float32 product rounded to half), summed per row to a half norm;
3. U·Vᵀ accumulated in float32 from the exact half products, rounded to half;
4. ``norm_u − 2·UVᵀ`` rounded to half, ``+ norm_v`` rounded to half, clamped at 0;
5. a 10,000 × 10,000 block holding a non-finite entry recomputed in float32 instead. (Only an
   infinite norm makes one: a product that overflows alone gives −inf before the clamp, so 0, and
   the block stays in half, as in ADM's graph.)

The radius of a point is the 4th smallest squared distance in its row, the point itself included
(its 3rd nearest other point); a point is covered when its distance is ≤ a radius. Precision is the
fraction of samples inside any reference ball, recall the fraction of references inside any sample
ball. Float32 ports skip the half roundings, which is why they are 0.1–0.25 points off.

Each row's half sum (step 2) rounds at every add, in an order that is the kernel's: here
TensorFlow's CPU kernel's (Eigen's tree of 8-lane half packets, four accumulators, leaves of
1,024), whose precision and recall this equals count for count (tests/test_adm.py, against
TensorFlow's own ops). On GPUs TensorFlow also sums in half, in cub's order for the GPU: the
published numbers were computed so, and a norm may differ from this by a half ulp.
"""

from __future__ import annotations

import numpy as np

BLOCK = 10_000  # ADM's row and column batch
NEIGHBOURS = 3  # ADM's nhood_sizes = (3,)
TILE = 1024  # rows computed at a time inside a block: memory O(TILE × BLOCK)


def _half(x) -> np.ndarray:
    """Rounded to half, as a TensorFlow half op's result; beyond 65504 it is inf, as there."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16)


def _f32(x) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def half_norms(u16: np.ndarray) -> np.ndarray:
    """Σ_j u_j² per row in half (step 2), from half features."""
    return _eigen_half_sum(_half(_f32(u16) ** 2))


def _eigen_half_sum(values: np.ndarray, packet: int = 8, accumulators: int = 4, leaf: int = 1024) -> np.ndarray:
    """Eigen's vectorised inner-dimension sum of half values, as TensorFlow's CPU kernel runs it:
    above ``leaf`` values the row splits in two at a packet multiple (the halves summed in half);
    within a leaf, ``accumulators`` packets of ``packet`` half lanes add consecutive packets lane by
    lane in half, are combined in order, take the remaining whole packets, and their lanes are summed
    in float32 and rounded to half; the scalar tail, summed in half, is added last."""
    n = values.shape[1]
    if n > leaf:
        split = packet * -(-(n // 2) // packet)
        return _half(_f32(_eigen_half_sum(values[:, :split], packet, accumulators, leaf)) +
                     _f32(_eigen_half_sum(values[:, split:], packet, accumulators, leaf)))
    unrolled, whole = n // (accumulators * packet) * accumulators * packet, n // packet * packet
    lanes = [np.zeros((values.shape[0], packet), dtype=np.float16) for _ in range(accumulators)]
    for start in range(0, unrolled, accumulators * packet):
        for a in range(accumulators):
            begin = start + a * packet
            lanes[a] = _half(_f32(lanes[a]) + _f32(values[:, begin:begin + packet]))
    combined = lanes[0]
    for other in lanes[1:]:
        combined = _half(_f32(combined) + _f32(other))
    for begin in range(unrolled, whole, packet):
        combined = _half(_f32(combined) + _f32(values[:, begin:begin + packet]))
    tail = np.zeros(values.shape[0], dtype=np.float16)
    for column in range(whole, n):
        tail = _half(_f32(tail) + _f32(values[:, column]))
    return _half(_f32(tail) + _f32(_half(_f32(combined).sum(axis=1))))


def half_distances(u16: np.ndarray, norm_u: np.ndarray, v16: np.ndarray, norm_v: np.ndarray) -> np.ndarray:
    """ADM's float16 squared distances (steps 3–4), as float32 values of halves."""
    products = _half(_f32(u16) @ _f32(v16).T)  # exact half products, float32 sums
    with np.errstate(over="ignore", invalid="ignore"):
        doubled = _half(2 * _f32(products))
        difference = _half(_f32(norm_u)[:, None] - _f32(doubled))
        distances = _half(_f32(difference) + _f32(norm_v)[None, :])
        return np.maximum(distances.astype(np.float32), np.float32(0))


def float32_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The float32 fallback of a block with a non-finite half distance: the same steps in float32."""
    u, v = _f32(u), _f32(v)
    norm_u, norm_v = (u * u).sum(axis=1), (v * v).sum(axis=1)
    return np.maximum(norm_u[:, None] - 2 * (u @ v.T) + norm_v[None, :], np.float32(0))


class _Side:
    """One set of features as the distance block reads it: half features and half norms."""

    def __init__(self, features: np.ndarray):
        self.features = features
        self.half = _half(features)
        self.norms = half_norms(self.half)


def _blocks(n: int):
    for start in range(0, n, BLOCK):
        yield start, min(start + BLOCK, n)


HALF_MAX = 65504.0


def _block_tiles(rows: _Side, r0: int, r1: int, cols: _Side, c0: int, c1: int):
    """The distances of ADM's block (rows r0:r1, columns c0:c1) in tiles of TILE rows: half,
    unless any entry of the whole block is not finite, then float32 throughout. Every intermediate
    is at most 2·(‖u‖² + ‖v‖²) (Cauchy–Schwarz), so most blocks are known finite from their norms;
    only the others are computed twice, once to look."""
    def half_tiles():
        for t0 in range(r0, r1, TILE):
            t1 = min(t0 + TILE, r1)
            yield t0, t1, half_distances(rows.half[t0:t1], rows.norms[t0:t1], cols.half[c0:c1], cols.norms[c0:c1])

    largest = float(rows.norms[r0:r1].astype(np.float32).max()) + float(cols.norms[c0:c1].astype(np.float32).max())
    finite = np.isfinite(largest) and 2 * largest < HALF_MAX * (1 - 2.0**-10)
    if finite or all(np.isfinite(tile).all() for _, _, tile in half_tiles()):
        yield from half_tiles()
        return
    for t0 in range(r0, r1, TILE):
        t1 = min(t0 + TILE, r1)
        yield t0, t1, float32_distances(rows.features[t0:t1], cols.features[c0:c1])


def _radii(side: _Side) -> np.ndarray:
    """Each point's 4th smallest distance over all points of its set, itself included."""
    n = side.features.shape[0]
    smallest = np.full((n, NEIGHBOURS + 1), np.inf, dtype=np.float32)
    for r0, r1 in _blocks(n):
        for c0, c1 in _blocks(n):
            for t0, t1, tile in _block_tiles(side, r0, r1, side, c0, c1):
                both = np.concatenate([smallest[t0:t1], tile], axis=1)
                smallest[t0:t1] = np.partition(both, NEIGHBOURS, axis=1)[:, :NEIGHBOURS + 1]
    return np.sort(smallest, axis=1)[:, NEIGHBOURS]


def precision_recall(ref_pool, sample_pool) -> tuple[float, float]:
    """ADM's (precision, recall) of sample features against reference features (pool3, (N, 2048)
    float32 each, at least 4 rows)."""
    ref, sample = (_checked(x, name) for x, name in ((ref_pool, "the reference batch"),
                                                     (sample_pool, "the sample batch")))
    if ref.shape[1] != sample.shape[1]:
        raise ValueError(f"the reference batch has {ref.shape[1]} features per image, the sample batch "
                         f"{sample.shape[1]}")
    ref_side, sample_side = _Side(ref), _Side(sample)
    ref_radii, sample_radii = _radii(ref_side), _radii(sample_side)
    ref_covered = np.zeros(len(ref), dtype=bool)  # inside some sample's ball: recall
    sample_covered = np.zeros(len(sample), dtype=bool)  # inside some reference's ball: precision
    for r0, r1 in _blocks(len(ref)):
        for c0, c1 in _blocks(len(sample)):
            for t0, t1, tile in _block_tiles(ref_side, r0, r1, sample_side, c0, c1):
                ref_covered[t0:t1] |= (tile <= sample_radii[None, c0:c1]).any(axis=1)
                sample_covered[c0:c1] |= (tile <= ref_radii[t0:t1, None]).any(axis=0)
    return float(sample_covered.mean()), float(ref_covered.mean())


def _checked(features, name: str) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name}'s features must be 2-D (N, features), got shape {x.shape}")
    if x.shape[0] < NEIGHBOURS + 1:
        raise ValueError(f"{name} has {x.shape[0]} images; precision and recall need at least "
                         f"{NEIGHBOURS + 1} (each radius is the distance to the {NEIGHBOURS}rd nearest other one)")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError(f"{name}'s features must be finite floating point values")
    return x.astype(np.float32, copy=False)

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

Steps 3–5, the radii (torch.topk of each tile beside the 4 smallest so far) and the coverage run in
torch, on the CPU or a GPU, in tiles: memory is O(TILE × BLOCK) whatever the number of images. The
products are true float32 (TF32 is switched off while they run); on the CPU the roundings after
them run fused in the native core (fastfid._core.adm_half_distances). The time is the products':
each set's own products serve both orientations of its radii, so they are computed once
(docs/protocols.md has the timings beside a float32 numpy estimator and TensorFlow's half ops).
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


def half_distances(u16: np.ndarray, norm_u: np.ndarray, v16: np.ndarray, norm_v: np.ndarray, device=None) -> np.ndarray:
    """ADM's float16 squared distances (steps 3–4) of half features and their half norms, as float32
    values of halves (the whole matrix at once: for tests and small sets)."""
    import torch

    device = torch.device(device or "cpu")
    tensors = [torch.from_numpy(np.ascontiguousarray(_f32(x))).to(device) for x in (u16, norm_u, v16, norm_v)]
    return _half_tile(*tensors).cpu().numpy()


def _half_tile(u, norm_u, v, norm_v):
    """Steps 3–4 on float32 tensors holding half values: every op's result rounded to half, as
    TensorFlow's half ops round theirs (a float32 op on two halves, rounded once, is the correctly
    rounded half op: float32 carries more than twice half's precision). On the CPU the roundings run
    fused in the native core, one pass over the tile; elsewhere as torch ops."""
    with _float32_products():
        products = u @ v.T  # exact half products, float32 sums
    return _rounded(products, norm_u, norm_v)


def _rounded(products, norm_u, norm_v):
    """Steps 3–4 after the product: in place in the native core on the CPU, torch ops elsewhere."""
    import torch

    if products.device.type != "cpu":
        return _torch_roundings(products, norm_u, norm_v)
    from fastfid import _core

    _core.adm_half_distances(products.numpy(), norm_u.numpy(), norm_v.numpy(), torch.get_num_threads())
    return products


def _torch_roundings(products, norm_u, norm_v):
    """The roundings of steps 3–4 as torch ops (the device path; the native core's on the CPU)."""
    import torch

    doubled = (products.half().float() * 2).half()
    difference = (norm_u[:, None] - doubled.float()).half()
    distances = (difference.float() + norm_v[None, :]).half().float()
    return torch.clamp_min(distances, 0.0)  # NaN stays NaN, as np.maximum and TensorFlow's maximum keep it


def float32_distances(u, v):
    """The float32 fallback of a block with a non-finite half distance: the same steps in float32
    (numpy arrays in, numpy out; tensors in, tensors out)."""
    import torch

    tensors = not isinstance(u, np.ndarray)
    u, v = (x if tensors else torch.from_numpy(np.ascontiguousarray(_f32(x))) for x in (u, v))
    with _float32_products():
        between = u @ v.T
    distances = torch.clamp_min((u * u).sum(1)[:, None] - 2 * between + (v * v).sum(1)[None, :], 0.0)
    return distances if tensors else distances.numpy()


class _float32_products:
    """Matrix products in true float32 while inside: TF32 and reduced-precision float32 products (a
    user's torch.set_float32_matmul_precision("high"), CUDA's allow_tf32) would change the sums
    before their rounding to half."""

    def __enter__(self):
        import torch

        self.precision, self.tf32 = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *_):
        import torch

        torch.set_float32_matmul_precision(self.precision)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32


class _Side:
    """One set of features as the distance block reads it: the float32 features, their half values
    and half norms (as float32 tensors on the device)."""

    def __init__(self, features: np.ndarray, device):
        import torch

        self.features = torch.from_numpy(features).to(device)
        self.half = self.features.half().float()
        self.norms = torch.from_numpy(half_norms(self.half.cpu().numpy()).astype(np.float32)).to(device)


def _blocks(n: int):
    for start in range(0, n, BLOCK):
        yield start, min(start + BLOCK, n)


HALF_MAX = 65504.0


def _known_finite(rows: _Side, r0: int, r1: int, cols: _Side, c0: int, c1: int) -> bool:
    """Whether every half intermediate of the block (rows r0:r1, columns c0:c1) is finite, as its
    norms show: each is at most 2·(‖u‖² + ‖v‖²) (Cauchy–Schwarz), below half's largest value."""
    largest = float(rows.norms[r0:r1].max()) + float(cols.norms[c0:c1].max())
    return bool(np.isfinite(largest)) and 2 * largest < HALF_MAX * (1 - 2.0**-10)


def _block_tiles(rows: _Side, r0: int, r1: int, cols: _Side, c0: int, c1: int):
    """The distances of ADM's block (rows r0:r1, columns c0:c1) in tiles of TILE rows: half,
    unless any entry of the whole block is not finite, then float32 throughout. Most blocks are
    known finite from their norms (_known_finite); only the others are computed twice, once to look."""
    def half_tiles():
        for t0 in range(r0, r1, TILE):
            t1 = min(t0 + TILE, r1)
            yield t0, t1, _half_tile(rows.half[t0:t1], rows.norms[t0:t1], cols.half[c0:c1], cols.norms[c0:c1])

    if _known_finite(rows, r0, r1, cols, c0, c1) or all(bool(tile.isfinite().all()) for _, _, tile in half_tiles()):
        yield from half_tiles()
        return
    for t0 in range(r0, r1, TILE):
        t1 = min(t0 + TILE, r1)
        yield t0, t1, float32_distances(rows.features[t0:t1], cols.features[c0:c1])


def _radii(side: _Side):
    """Each point's 4th smallest distance over all points of its set, itself included. A product
    uᵢ·uⱼ serves both rows i and j: a tile's product with the columns from its own first row on gives
    its rows' distances and, transposed, those columns' rows' (each op in that orientation's order:
    norm_j − 2p, then + norm_i), so the set's products are computed once, not twice. A block whose
    norms do not show it finite goes as ADM's: each orientation by itself."""
    import torch

    n = side.features.shape[0]
    smallest = torch.full((n, NEIGHBOURS + 1), float("inf"), device=side.features.device)

    def keep(first: int, tile) -> None:
        last = first + tile.shape[0]
        both = torch.cat([smallest[first:last], tile], dim=1)
        smallest[first:last] = torch.topk(both, NEIGHBOURS + 1, dim=1, largest=False, sorted=False).values

    for r0, r1 in _blocks(n):
        for c0, c1 in _blocks(n):
            if c0 < r0:
                continue
            if not _known_finite(side, r0, r1, side, c0, c1):
                for (a0, a1), (b0, b1) in (((r0, r1), (c0, c1)), ((c0, c1), (r0, r1)))[:1 if c0 == r0 else 2]:
                    for t0, _, tile in _block_tiles(side, a0, a1, side, b0, b1):
                        keep(t0, tile)
                continue
            for t0 in range(r0, r1, TILE):
                t1 = min(t0 + TILE, r1)
                start = t0 if c0 == r0 else c0  # in the diagonal block, the columns from this tile on
                with _float32_products():
                    products = side.half[t0:t1] @ side.half[start:c1].T
                mirrored = products[:, t1 - start:] if c0 == r0 else products  # not this tile's own square
                mirrored = mirrored.T.contiguous()
                keep(t0, _rounded(products, side.norms[t0:t1], side.norms[start:c1]))
                if mirrored.shape[0]:
                    first = c1 - mirrored.shape[0]
                    keep(first, _rounded(mirrored, side.norms[first:c1], side.norms[t0:t1]))
    return smallest.max(dim=1).values  # the largest of the 4 smallest


def precision_recall(ref_pool, sample_pool, *, device=None) -> tuple[float, float]:
    """ADM's (precision, recall) of sample features against reference features (pool3, (N, 2048)
    float32 each, at least 4 rows), computed with torch on ``device`` (default: the CPU)."""
    import torch

    ref, sample = (_checked(x, name) for x, name in ((ref_pool, "the reference batch"),
                                                     (sample_pool, "the sample batch")))
    if ref.shape[1] != sample.shape[1]:
        raise ValueError(f"the reference batch has {ref.shape[1]} features per image, the sample batch "
                         f"{sample.shape[1]}")
    device = torch.device(device or "cpu")
    ref_side, sample_side = _Side(ref, device), _Side(sample, device)
    ref_radii, sample_radii = _radii(ref_side), _radii(sample_side)
    ref_covered = torch.zeros(len(ref), dtype=torch.bool, device=device)  # inside some sample's ball: recall
    sample_covered = torch.zeros(len(sample), dtype=torch.bool, device=device)  # inside some reference's: precision
    for r0, r1 in _blocks(len(ref)):
        for c0, c1 in _blocks(len(sample)):
            for t0, t1, tile in _block_tiles(ref_side, r0, r1, sample_side, c0, c1):
                ref_covered[t0:t1] |= (tile <= sample_radii[None, c0:c1]).any(dim=1)
                sample_covered[c0:c1] |= (tile <= ref_radii[t0:t1, None]).any(dim=0)
    return int(sample_covered.sum()) / len(sample), int(ref_covered.sum()) / len(ref)  # as numpy.mean of bools


def _checked(features, name: str) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name}'s features must be 2-D (N, features), got shape {x.shape}")
    if x.shape[0] < NEIGHBOURS + 1:
        raise ValueError(f"{name} has {x.shape[0]} images; precision and recall need at least "
                         f"{NEIGHBOURS + 1} (each radius is the distance to the {NEIGHBOURS}rd nearest other one)")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError(f"{name}'s features must be finite floating point values")
    return np.ascontiguousarray(x, dtype=np.float32)

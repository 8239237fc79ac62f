"""Features and images the tests compute references with: ReLU-like features with a decaying
spectrum, and the bilinear and bicubic resizes in float64."""

import numpy as np


def relu_features(rng, n, d, *, offset=0.0, decay=None, dtype=np.float64):
    """ReLU-like features with a decaying spectrum, as Inception pool features look: a Gaussian with
    geometric variances, mixed by a random rotation, shifted and rectified."""
    decay = decay if decay is not None else max(d / 8, 1.0)
    z = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / decay)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return np.maximum(z @ q + offset, 0).astype(dtype)


def bilinear_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, H, W) → (C, h, w) by the half-pixel bilinear rule (align_corners=False, no antialiasing), in
    float64: source coordinate (i + 0.5)·H/h − 0.5, clamped at 0, blended with the next pixel."""
    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, src - low

    (r0, r1, rw), (c0, c1, cw) = axis(image.shape[1], size[0]), axis(image.shape[2], size[1])
    rows = image[:, r0] * (1 - rw)[:, None] + image[:, r1] * rw[:, None]
    return rows[:, :, c0] * (1 - cw) + rows[:, :, c1] * cw


def bicubic_reference(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) → (h, w) as PIL resamples with BICUBIC: Keys' cubic (a = −0.5), pixel centres at + 0.5,
    the kernel widened by the scale when shrinking (antialiasing), weights renormalised at the borders."""
    def cubic(x):
        x = np.abs(x)
        return np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0))

    def matrix(n_in, n_out):
        scale = n_in / n_out
        width = max(scale, 1.0)
        weights = np.zeros((n_out, n_in))
        for i in range(n_out):
            centre = (i + 0.5) * scale
            first = max(int(centre - 2 * width + 0.5), 0)
            last = min(int(centre + 2 * width + 0.5), n_in)
            j = np.arange(first, last)
            w = cubic((j - centre + 0.5) / width)
            weights[i, first:last] = w / w.sum()
        return weights

    return matrix(channel.shape[0], size[0]) @ channel @ matrix(channel.shape[1], size[1]).T

"""How far ADM's FID (TTUR's formula: scipy's sqrtm of Σ₁Σ₂, its real part) lies from fastfid's exact
distance on one realistic case: pool3-like features (ReLU of a Gaussian with a decaying spectrum,
d = 2048), ADM's statistics (float32 means, np.cov of float32 activations), 50,000 samples against
a 10,000-image reference, at three gaps between the sets.

    python benchmarks/adm_sqrtm_gap.py [--samples 50000] [--reference 10000]
"""

import argparse
import time

import numpy as np
import scipy
import scipy.linalg

import fastfid


def adm_fid(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """guided-diffusion evaluator.py's frechet_distance (TTUR's), with scipy's sqrtm."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def activations(rng, n, rotation, offset, d=2048):
    z = rng.standard_normal((n, d)).astype(np.float32) * np.exp(-np.arange(d) / 256).astype(np.float32)
    return np.maximum(z @ rotation + offset, 0).astype(np.float32)


def moments(x):
    """ADM's: the float32 mean, np.cov (float64) of the float32 activations."""
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--reference", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(2048)
    rotation = np.linalg.qr(rng.standard_normal((2048, 2048)))[0].astype(np.float32)
    reference = moments(activations(rng, args.reference, rotation, 0.3))
    print(f"fastfid {fastfid.__version__}, numpy {np.__version__}, scipy {scipy.__version__}; "
          f"{args.samples} samples against {args.reference} references, d = 2048")
    print("| sample offset | fastfid (exact) | ADM (scipy sqrtm) | ADM − fastfid | sqrtm time | fastfid time |")
    print("|---|---|---|---|---|---|")
    for offset in (0.3, 0.31, 0.35):
        samples = moments(activations(rng, args.samples, rotation, offset))
        start = time.perf_counter()
        theirs = adm_fid(*samples, *reference)
        middle = time.perf_counter()
        ours = fastfid.frechet_distance(*samples, *reference)
        end = time.perf_counter()
        print(f"| {offset} | {ours:.8f} | {theirs:.8f} | {theirs - ours:+.2e} | {middle - start:.1f} s | "
              f"{end - middle:.2f} s |")


if __name__ == "__main__":
    main()

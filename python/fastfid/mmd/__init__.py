"""CMMD (Jayasumana et al., CVPR 2024, "Rethinking FID"): the maximum mean discrepancy of two sets of
image embeddings under a Gaussian kernel, as google-research's ``cmmd`` defines it:

    CMMD = 1000 · ( mean k(xᵢ, xⱼ) + mean k(yᵢ, yⱼ) − 2 mean k(xᵢ, yⱼ) ),   k(a, b) = exp(−‖a − b‖² / (2σ²)),

with σ = 10 and every mean over all pairs, the diagonal included (the biased estimator). The
original computes it in float32; here each kernel sum runs in float64 in the native core, over
blocks of 1,024 rows, so memory stays O(block) at 30,000 × 30,000.

The embeddings are CLIP ViT-L/14 at 336 px (OpenAI's weights), the projected image embedding,
L2-normalised: the ``clip-vit-l-14-336`` space (:func:`embed`; ``pip install "fastfid[spaces]"``).
Either side may be images (a folder, zip, 4-D array or tensor, generator) or embeddings (a 2-D
array or tensor, a ``.npy``, or a saved reference); a reference's own kernel sum is computed once
and saved with its embeddings (:class:`Embeddings`), since the cross term needs the embeddings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CMMDResult", "Embeddings", "SCALE", "SIGMA", "SPACE", "as_embeddings", "cmmd", "embed"]

SIGMA = 10.0
SCALE = 1000.0
SPACE = "clip-vit-l-14-336"
_FORMAT = "fastfid-cmmd-embeddings-1"


@dataclass(frozen=True)
class CMMDResult:
    """CMMD of a generated set against a reference set; ``float(result)`` is the value."""

    value: float
    generated: int
    """How many generated embeddings."""
    reference: int
    sigma: float = SIGMA
    scale: float = SCALE

    def __float__(self) -> float:
        return self.value

    def as_dict(self) -> dict:
        return {"cmmd": self.value, "generated": self.generated, "reference": self.reference, "sigma": self.sigma,
                "scale": self.scale}

    def __str__(self) -> str:
        return f"CMMD: {self.value:.6f}  [{self.generated} generated, {self.reference} reference embeddings]"


class Embeddings:
    """A set of embeddings (n, d) and its own kernel sum Σᵢⱼ k(xᵢ, xⱼ) at ``sigma``, computed at first
    use; what a reference needs, saved and loaded with :meth:`save` / :meth:`load`."""

    def __init__(self, embeddings, *, sigma: float = SIGMA, space: str | None = None, name: str = "embeddings",
                 self_sum: float | None = None):
        self.array = _checked(embeddings, name)
        if not (sigma > 0 and np.isfinite(sigma)):
            raise ValueError(f"sigma must be positive and finite, got {sigma!r}")
        self.sigma = float(sigma)
        self.space = space
        self.name = name
        self._self_sum = self_sum

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def self_sum(self) -> float:
        if self._self_sum is None:
            from fastfid import _core

            self._self_sum = float(_core.gaussian_kernel_sum(self.array, self.array, self.sigma))
        return self._self_sum

    def save(self, path: str | os.PathLike) -> None:
        """A .npz of the embeddings, their kernel sum, σ and space, written atomically."""
        from fastfid.files.atomic import write_atomically

        members: dict[str, Any] = {"cmmd_format": np.array(_FORMAT), "embeddings": self.array,
                                   "kernel_sum": np.array(self.self_sum), "sigma": np.array(self.sigma),
                                   "space": np.array(self.space or "")}
        write_atomically(Path(path), lambda stream: np.savez(stream, **members))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Embeddings saved by :meth:`save` (their kernel sum is kept), or a plain ``.npy`` of (n, d)."""
        from fastfid.files.archive import open_npz

        path = Path(path)
        if path.suffix == ".npy":
            from fastfid.files.arrays import open_array

            return cls(np.asarray(open_array(path)), name=str(path))
        with open_npz(path) as archive:
            if "cmmd_format" not in archive or str(archive.read("cmmd_format")) != _FORMAT:
                raise ValueError(f"{path} is not a file of CMMD embeddings (fastfid.mmd.Embeddings.save writes them)")
            kernel_sum, sigma = float(archive.read("kernel_sum")), float(archive.read("sigma"))
            embeddings, space = archive.read("embeddings"), str(archive.read("space")) or None
        if not np.isfinite(kernel_sum) or kernel_sum <= 0:
            raise ValueError(f"{path}: its kernel sum {kernel_sum!r} is not a positive number")
        return cls(embeddings, sigma=sigma, space=space, name=str(path), self_sum=kernel_sum)


def cmmd(generated, reference, *, sigma: float = SIGMA, scale: float = SCALE, **embedding) -> CMMDResult:
    """CMMD of ``generated`` against ``reference``, each images or embeddings (see the module).
    ``sigma`` and ``scale`` are the original's (10 and 1000); ``embedding``: :func:`embed`'s options for
    a side of images (weights, device, batch_size, resize, num_workers, progress)."""
    x, y = (as_embeddings(side, name, sigma, **embedding) for side, name in ((generated, "generated"),
                                                                              (reference, "reference")))
    if x.dim != y.dim:
        raise ValueError(f"the generated embeddings have {x.dim} dims, the reference's {y.dim}")
    if x.space and y.space and x.space != y.space:
        raise ValueError(f"the generated embeddings are of {x.space!r}, the reference's of {y.space!r}")
    from fastfid import _core

    m, n = len(x), len(y)
    between = float(_core.gaussian_kernel_sum(x.array, y.array, float(sigma)))
    value = scale * (x.self_sum / (m * m) + y.self_sum / (n * n) - 2 * between / (m * n))
    return CMMDResult(float(value), m, n, float(sigma), float(scale))


def embed(images, *, weights=None, device=None, batch_size: int = 32, resize: str | None = None,
          num_workers: int | None = None, progress: bool = True, sigma: float = SIGMA,
          num_samples: int | None = None) -> Embeddings:
    """CMMD's embeddings of images (a folder, zip, 4-D array or tensor, generator callable: then
    ``num_samples`` of them): the ``clip-vit-l-14-336`` space, every image (the original drops its
    last partial batch of 32; this does not). ``resize``: ``"cmmd"`` (google-research's, the
    default) or ``"cmmd-pytorch"``."""
    from fastfid.extraction import FeatureExtractor
    from fastfid.extraction.networks import default_workers
    from fastfid.extraction.sources import open_source

    source: Any = open_source(images, num_samples)
    if not hasattr(source, "needs_network") or not source.needs_network:
        raise ValueError("embed takes images (a folder, zip, 4-D array or tensor, or a generator), not features "
                         "or statistics")
    extractor = FeatureExtractor(SPACE, weights=weights, device=device, resize=resize)
    workers = default_workers() if num_workers is None else num_workers
    rows = []
    from tqdm.auto import tqdm

    with tqdm(total=len(source), unit="images", desc="CMMD embeddings", disable=not progress) as bar:
        for batch in source.batches(0, len(source), batch_size=batch_size, plans=extractor.plans,
                                    num_workers=workers, pin_memory=extractor.device.type == "cuda",
                                    device=extractor.device):
            if batch.bad:
                raise ValueError(f"unreadable images: {'; '.join(batch.bad[:3])}")
            rows.append(extractor(batch.images.to(extractor.device, non_blocking=True))[0].double().cpu().numpy())
            bar.update(batch.attempted)
    return Embeddings(np.concatenate(rows), sigma=sigma, space=extractor.feature_space, name="the embeddings")


def as_embeddings(source, name: str = "embeddings", sigma: float = SIGMA, **embedding) -> Embeddings:
    """``source`` as :class:`Embeddings`: taken as they are, read from a file, or embedded from images."""
    if isinstance(source, Embeddings):
        if source.sigma != float(sigma):
            raise ValueError(f"the {name} embeddings' kernel sum is at sigma {source.sigma}, not {sigma}")
        return source
    if getattr(source, "ndim", None) == 4 or callable(source) and not hasattr(source, "shape"):
        return embed(source, sigma=sigma, **embedding)  # images in memory, or a generator of them
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix not in (".npy", ".npz") or path.suffix == ".npy" and _array_rank(path) == 4:
            return embed(path, sigma=sigma, **embedding)  # a folder, zip or .npy of images
        loaded = Embeddings.load(path)
        if loaded.sigma != float(sigma):
            raise ValueError(f"{path} holds a kernel sum at sigma {loaded.sigma}, not {sigma}")
        return loaded
    return Embeddings(source, sigma=sigma, name=f"the {name} embeddings")


def _array_rank(path: Path) -> int:
    from fastfid.files.arrays import open_array

    return open_array(path).ndim


def _checked(embeddings, name: str) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor, on any device
        embeddings = embeddings.detach().cpu().numpy()
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array of embeddings (n, d), got shape {array.shape}")
    if array.dtype.kind != "f":
        raise ValueError(f"{name} must be floating point, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold NaN or Inf values")
    if array.dtype not in (np.float16, np.float32, np.float64):
        array = array.astype(np.float64)
    return array.astype(array.dtype.newbyteorder("="), copy=False)  # the core reads native byte order

"""ADM's five numbers for a sample batch against a reference batch, as its evaluator prints them:
Inception Score, FID, sFID, precision and recall.

Statistics: a batch file holding ``mu``, ``sigma``, ``mu_s`` and ``sigma_s`` is represented by them
(ADM's reference batches carry those of the whole training set), otherwise by its activations'
mean and covariance (N − 1), computed exactly in float64. FID and sFID are fastfid's exact
distance, of the sample's statistics to the reference's. The Inception Score is ADM's (contiguous
splits of 5,000) and precision and recall its float16 ones, of the sample against the reference.

The reference batch's activations are cached under ``$FASTFID_HOME/adm`` (default
``~/.cache/fastfid/adm``), keyed by the file's SHA-256 and the weights, so that a second evaluation
against the same reference does not run its 10,000 images again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fastfid.adm.batches import ImageBatch
from fastfid.adm.manifold import NEIGHBOURS, precision_recall
from fastfid.adm.network import ADMInception, Activations, activations
from fastfid.adm.scores import inception_score

CACHE_VERSION = 1  # bump when what is cached changes meaning


@dataclass(frozen=True)
class ADMResult:
    inception_score: float
    fid: float
    sfid: float
    precision: float
    recall: float
    reference_statistics: str
    """"stored" (the reference file's mu, sigma, mu_s, sigma_s) or "computed" (from its images)."""

    def lines(self) -> list[str]:
        """The lines ADM's evaluator prints, in its order and format."""
        return [f"Inception Score: {self.inception_score}", f"FID: {self.fid}", f"sFID: {self.sfid}",
                f"Precision: {self.precision}", f"Recall: {self.recall}"]

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(ref_batch, sample_batch, *, weights=None, device=None, batch_size: int = 64, progress: bool = False,
             cache: bool = True) -> ADMResult:
    """ADM's evaluator on a reference batch and a sample batch (ADM ``.npz`` paths or uint8 NHWC
    arrays); ``weights`` as FIDInceptionV3's (pytorch-fid's file by default)."""
    from fastfid.distance import frechet_distance
    from fastfid.references import resolve

    ref_batch = resolve(ref_batch, progress=progress)  # a reference's name (adm/imagenet256): its checked file
    ref, sample = ImageBatch(ref_batch, _name(ref_batch, "the reference batch")), \
        ImageBatch(sample_batch, _name(sample_batch, "the sample batch"))
    for batch in (ref, sample):
        if len(batch) < NEIGHBOURS + 1:
            raise ValueError(f"{batch.name} has {len(batch)} images; ADM's precision and recall need at least "
                             f"{NEIGHBOURS + 1}")
    stored = ref.statistics()
    network = ADMInception(weights, device)
    ref_acts = _reference_activations(ref, network, batch_size, progress, cache)
    sample_acts = activations(sample, network=network, batch_size=batch_size, progress=progress)
    ref_stats = (stored.mu, stored.sigma, stored.mu_s, stored.sigma_s) if stored else (
        *_moments(ref_acts.pool), *_moments(ref_acts.spatial))
    sample_stored = sample.statistics()
    sample_stats = (sample_stored.mu, sample_stored.sigma, sample_stored.mu_s, sample_stored.sigma_s) \
        if sample_stored else (*_moments(sample_acts.pool), *_moments(sample_acts.spatial))
    fid = frechet_distance(sample_stats[0], sample_stats[1], ref_stats[0], ref_stats[1])
    sfid = frechet_distance(sample_stats[2], sample_stats[3], ref_stats[2], ref_stats[3])
    precision, recall = precision_recall(ref_acts.pool, sample_acts.pool, device=network.device)
    return ADMResult(inception_score(sample_acts.logits), fid, sfid, precision, recall,
                     "stored" if stored else "computed")


def _name(source, default: str) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else default


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from fastfid.stats import FeatureStats

    stats = FeatureStats.from_features(features.astype(np.float64))
    return stats.mean, stats.cov


def cache_dir() -> Path:
    from fastfid.files.home import fastfid_home

    return fastfid_home() / "adm"


def _reference_activations(ref: ImageBatch, network: ADMInception, batch_size: int, progress: bool,
                           cache: bool) -> Activations:
    """The reference's activations, from the cache when this file and these weights were seen
    (random weights are never cached: each network is another)."""
    usable = cache and ref.path is not None and network.weights_name != "random"
    path = None
    if usable:
        key = f"{ref.fingerprint()}|{network.weights_name}|{CACHE_VERSION}"
        path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"
        found = _read_cache(path, len(ref))
        if found is not None:
            return found
    computed = activations(ref, network=network, batch_size=batch_size, progress=progress)
    if path is not None:
        _write_cache(path, computed)
    return computed


def _read_cache(path: Path, count: int) -> Activations | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            found = Activations(data["pool"], data["spatial"], data["logits"])
    except (OSError, ValueError, KeyError):
        return None  # absent, or unreadable: computed again
    return found if len(found) == count and all(np.isfinite(a).all() for a in vars(found).values()) else None


def _write_cache(path: Path, found: Activations) -> None:
    from fastfid.files.atomic import write_atomically

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda stream: np.savez(stream, pool=found.pool, spatial=found.spatial,
                                                       logits=found.logits))
    except OSError:
        pass  # a read-only cache costs time, not results

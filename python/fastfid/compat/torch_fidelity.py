"""torch-fidelity's one call over fastfid: change ``torch_fidelity.calculate_metrics`` to
``fastfid.compat.torch_fidelity.calculate_metrics`` and keep its keyword arguments and result keys
for ``isc``, ``fid``, ``kid`` and ``prc``. Each input is read once: one pass of the network gives
the features every requested metric needs.

Inputs: a folder (``samples_find_deep``, ``samples_find_ext`` as torch-fidelity), a torch
``Dataset`` whose items are uint8 (3, H, W) tensors, a uint8 (N, 3, H, W) tensor or array, or a
generator in torch-fidelity's protocol (a module with ``z_size``, ``z_type``, ``num_classes``
returning uint8 images) with ``input{1,2}_model_num_samples``. Preprocessing is torch-fidelity's
(TensorFlow 1's bilinear resize, (x − 128)/128). What changes: FID is exact (statistics streamed in
float64, the symmetric trace term instead of the eigenvalues of Σ₁Σ₂), KID's kernel sums are
float64 in fastfid's core, and precision/recall run in the core's blocked distance routines.
Not provided: ``ppl``, feature extractors other than the FID Inception (so ``prc`` needs
``feature_extractor="inception-v3-compat"``; torch-fidelity's default for it is VGG16), and the on-disk cache
(each call reads its inputs; fastfid's statistics files are the cache for FID).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fastfid._native import core as _core
from fastfid.distance import frechet_distance
from fastfid.metrics import Kernel, inception_score_from_logits, kid_of_subsets
from fastfid.models import FIDInceptionV3
from fastfid.stats import FeatureStats

__all__ = ["calculate_metrics"]

DEFAULTS = {
    "input1": None, "input2": None, "cuda": True, "batch_size": 64, "isc": False, "fid": False, "kid": False,
    "prc": False, "feature_extractor": None, "feature_layer_isc": None, "feature_layer_fid": None,
    "feature_layer_kid": None, "feature_layer_prc": None, "feature_extractor_weights_path": None,
    "isc_splits": 10, "kid_subsets": 100, "kid_subset_size": 1000, "kid_kernel": "poly", "kid_kernel_poly_degree": 3,
    "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1, "kid_kernel_rbf_sigma": 10, "prc_neighborhood": 3,
    "prc_batch_size": 10000, "samples_shuffle": True, "samples_find_deep": False, "samples_find_ext": "png,jpg,jpeg",
    "samples_ext_lossy": "jpg,jpeg", "cache": True, "cache_root": None, "input1_cache_name": None,
    "input2_cache_name": None, "input1_model_num_samples": None, "input2_model_num_samples": None,
    "rng_seed": 2020, "save_cpu_ram": False, "verbose": True,
}
_LAYERS = ("64", "192", "768", "2048", "logits_unbiased")


def _vassert(truth: bool, message: str) -> None:
    if not truth:
        raise ValueError(message)  # torch-fidelity's vassert raises ValueError


def calculate_metrics(**kwargs) -> dict:
    """ISC, FID, KID and precision/recall of ``input1`` (against ``input2`` for the two-input
    metrics), with torch-fidelity's defaults and result keys."""
    unknown = set(kwargs) - set(DEFAULTS) - {"ppl", "feature_extractor_internal_dtype", "feature_extractor_compile",
                                             "datasets_root", "datasets_download", "samples_resize_and_crop"}
    _vassert(not unknown, f"Unknown arguments: {sorted(unknown)}")
    options = {**DEFAULTS, **kwargs}
    _vassert(not options.get("ppl"), "ppl (perceptual path length) is not provided by fastfid")
    _vassert(options["feature_extractor"] in (None, "inception-v3-compat"),
             f'Feature extractor "{options["feature_extractor"]}" is not provided by fastfid '
             "(only inception-v3-compat)")
    _vassert(any(options[m] for m in ("isc", "fid", "kid", "prc")), "At least one metric must be specified")
    _vassert(not (options["prc"] and options["feature_extractor"] is None),
             "prc's default features in torch-fidelity are VGG16's, which fastfid does not provide: pass "
             "feature_extractor='inception-v3-compat' for precision/recall on Inception features")
    layers = {metric: options[f"feature_layer_{metric}"] or ("logits_unbiased" if metric == "isc" else "2048")
              for metric in ("isc", "fid", "kid", "prc") if options[metric]}
    for layer in layers.values():
        _vassert(layer in _LAYERS, f"Feature layer {layer} is not one of {_LAYERS}")
    two = [m for m in ("fid", "kid", "prc") if options[m]]
    _vassert(not two or options["input2"] is not None, f"Metrics {two} need input2")
    device = torch.device("cuda" if options["cuda"] and torch.cuda.is_available() else "cpu")
    network = FIDInceptionV3(2048, weights=options["feature_extractor_weights_path"], scaling="tensorflow").to(device)
    verbose = options["verbose"]

    out: dict = {}
    first = _features(1, options, network, device, set(layers.values()), keep={layers[m] for m in layers if m != "fid"})
    if options["isc"]:
        out.update(_isc(first.kept[layers["isc"]], options))
    if two:
        second = _features(2, options, network, device, {layers[m] for m in two},
                           keep={layers[m] for m in two if m != "fid"})
        if options["fid"]:
            a, b = first.stats[layers["fid"]], second.stats[layers["fid"]]
            out["frechet_inception_distance"] = float(frechet_distance(a.mean, a.cov, b.mean, b.cov))
        if options["kid"]:
            out.update(_kid(first.kept[layers["kid"]], second.kept[layers["kid"]], options))
        if options["prc"]:
            out.update(_prc(first.kept[layers["prc"]], second.kept[layers["prc"]], options))
    if verbose:
        for key, value in out.items():
            print(f"{key}: {value:.7g}")
    return out


class _Collected:
    def __init__(self):
        self.stats: dict[str, FeatureStats] = {}
        self.kept: dict[str, np.ndarray] = {}


def _features(which: int, options: dict, network, device, layers: set, keep: set) -> _Collected:
    """One pass over input ``which``: exact statistics of each layer and the features kept for KID,
    precision/recall and IS."""
    from fastfid.data import resize_batch

    last = max(2048 if layer == "logits_unbiased" else int(layer) for layer in layers)  # the deepest block needed
    collected = _Collected()
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in keep}
    for images in _batches(which, options, device):
        _vassert(images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3,
                 f"Input {which} must give uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        pixels = resize_batch(images.to(device, torch.float32) / 255, network.input_size, "torch-fidelity")
        with torch.no_grad():
            outputs = {str(width): block.mean(dim=(2, 3))
                       for width, block in network.block_maps(network._prepare(pixels), last)}
            if "logits_unbiased" in layers:
                outputs["logits_unbiased"] = outputs["2048"] @ network.fc.weight.t()
        for layer in layers:
            values = outputs[layer].double().cpu().numpy()
            stats = collected.stats.setdefault(layer, FeatureStats(values.shape[1]))
            stats.update(values)
            if layer in parts:
                parts[layer].append(values)
    collected.kept = {layer: np.concatenate(chunks) for layer, chunks in parts.items()}
    return collected


def _batches(which: int, options: dict, device):
    source, batch_size = options[f"input{which}"], options["batch_size"]
    if isinstance(source, str):
        yield from _folder_batches(source, options, batch_size)
    elif isinstance(source, (torch.Tensor, np.ndarray)):
        images = torch.as_tensor(source)
        for first in range(0, images.shape[0], batch_size):
            yield images[first:first + batch_size]
    elif isinstance(source, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(source, batch_size=batch_size, shuffle=False, drop_last=False)
        for batch in loader:
            yield batch
    elif all(hasattr(source, name) for name in ("z_size", "z_type", "num_classes")):
        count = options[f"input{which}_model_num_samples"]
        yield from _generated(source, count, batch_size, options["rng_seed"], device)
    else:
        raise ValueError(f"Input {which} must be a folder path, a Dataset of uint8 images, a uint8 (N, 3, H, W) tensor "
                         f"or a generative model; got {type(source).__name__}")


def _folder_batches(path: str, options: dict, batch_size: int):
    from PIL import Image

    _vassert(os.path.isdir(path), f"Input {path} is not a folder (registered dataset names are not provided)")
    extensions = [e.strip() for e in options["samples_find_ext"].split(",") if e.strip()]
    files = []
    for root, _, names in os.walk(path):
        if not options["samples_find_deep"] and os.path.realpath(root) != os.path.realpath(path):
            continue
        files += [os.path.join(root, n) for n in names if os.path.splitext(n)[1].lower()[1:] in extensions]
    files.sort()
    _vassert(len(files) > 0, f"No samples found in {path} with samples_find_deep={options['samples_find_deep']}")

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            with Image.open(files[index]) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()

    yield from torch.utils.data.DataLoader(Files(), batch_size=batch_size, shuffle=False, drop_last=False)


def _generated(model, num_samples, batch_size: int, rng_seed: int, device):
    """torch-fidelity's sampling: z from np.random.RandomState(rng_seed) batch by batch, class labels after."""
    _vassert(isinstance(num_samples, int) and num_samples > 0, "Number of samples must be positive")
    rng = np.random.RandomState(rng_seed)
    noise = {"normal": lambda shape: torch.from_numpy(rng.randn(*shape)).float(),
             "uniform_0_1": lambda shape: torch.from_numpy(rng.rand(*shape)).float()}
    _vassert(model.z_type in noise, f"Noise type {model.z_type} is not provided")
    batch_size = min(batch_size, num_samples)
    for start in range(0, num_samples, batch_size):
        size = min(start + batch_size, num_samples) - start
        args = [noise[model.z_type]((size, model.z_size)).to(device)]
        if model.num_classes > 0:
            args.append(torch.from_numpy(rng.randint(low=0, high=model.num_classes, size=(size,))).to(device))
        with torch.no_grad():
            yield model(*args)


def _isc(logits: np.ndarray, options: dict) -> dict:
    """torch-fidelity's IS: a RandomState(rng_seed) permutation, splits i·N/splits … (i + 1)·N/splits,
    std with divisor splits."""
    n, splits = logits.shape[0], options["isc_splits"]
    if options["samples_shuffle"]:
        logits = logits[np.random.RandomState(options["rng_seed"]).permutation(n)]
    scores = [inception_score_from_logits(logits[i * n // splits:(i + 1) * n // splits], splits=1).mean
              for i in range(splits)]
    return {"inception_score_mean": float(np.mean(scores)), "inception_score_std": float(np.std(scores))}


def _kid(features1: np.ndarray, features2: np.ndarray, options: dict) -> dict:
    size, n1, n2 = options["kid_subset_size"], len(features1), len(features2)
    _vassert(n1 >= size and n2 >= size,
             f"KID subset size {size} cannot be smaller than the number of samples (input_1: {n1}, input_2: {n2}). "
             'Consider using "kid_subset_size" kwarg or "--kid-subset-size" command line key to proceed.')
    rng = np.random.RandomState(options["rng_seed"])
    draws = [(rng.choice(n1, size, replace=False), rng.choice(n2, size, replace=False))
             for _ in range(options["kid_subsets"])]
    kernel = Kernel(kind=options["kid_kernel"], degree=options["kid_kernel_poly_degree"],
                    gamma=options["kid_kernel_poly_gamma"], coef0=float(options["kid_kernel_poly_coef0"]),
                    sigma=float(options["kid_kernel_rbf_sigma"]))
    result = kid_of_subsets(features1, features2, draws, kernel=kernel)
    return {"kernel_inception_distance_mean": result.mean, "kernel_inception_distance_std": result.std}


def _prc(generated: np.ndarray, real: np.ndarray, options: dict) -> dict:
    """torch-fidelity's precision and recall (input1 generated, input2 real; a sample is inside a
    set's manifold if within some member's distance to its k-th nearest other member)."""
    k = options["prc_neighborhood"]
    real_radii, generated_radii = _core.kth_neighbour_radii(real, k), _core.kth_neighbour_radii(generated, k)
    in_real, _ = _core.ball_membership(generated, real, real_radii)
    in_generated, _ = _core.ball_membership(real, generated, generated_radii)
    precision, recall = float(np.mean(in_real > 0)), float(np.mean(in_generated > 0))
    return {"precision": precision, "recall": recall,
            "f_score": 2 * precision * recall / max(1e-5, precision + recall)}

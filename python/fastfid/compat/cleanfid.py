"""clean-fid's interface over fastfid: change ``from cleanfid import fid`` to
``from fastfid.compat import cleanfid as fid`` and keep ``compute_fid`` / ``compute_kid`` with their
``mode`` ("clean", "legacy_pytorch", "legacy_tensorflow"), folder, zip and generator inputs,
``custom_feat_extractor``, ``custom_image_tranform`` and ``custom_fn_resize``, and the custom
statistics functions.

What changes: statistics are exact and streamed (``compute_fid`` keeps no feature array; KID
keeps the features it needs), the trace term is exact, and custom statistics live in fastfid's
store (``$FASTFID_HOME/cleanfid_stats``, default ``~/.cache/fastfid/cleanfid_stats``) as fastfid's
mergeable statistics plus the features KID needs. Every mode runs pytorch-fid's weights of the FID
Inception; clean-fid's "clean" and "legacy_tensorflow" run NVIDIA's TorchScript port of the same
TensorFlow graph. clean-fid's precomputed statistics of public datasets are not fetched (use
``make_custom_stats`` on the dataset, or pass a statistics file), and ``model_name="clip_vit_b_32"``
is refused: it needs OpenAI's CLIP package and weights, which fastfid does not ship.
"""

from __future__ import annotations

import functools
import os
import zipfile
from glob import glob
from pathlib import Path

import numpy as np
import torch

from fastfid.data import die_with_parent, resize_image
from fastfid.distance import frechet_distance
from fastfid.metrics import kid_of_subsets
from fastfid.models import FIDInceptionV3
from fastfid.models.inception import INPUT_SIZE
from fastfid.models.label import FeatureSpace
from fastfid.resize_modes import input_scaling
from fastfid.stats import FeatureStats

__all__ = ["compute_fid", "compute_kid", "frechet_distance", "get_folder_features", "kernel_distance",
           "make_custom_stats", "remove_custom_stats", "stats_folder", "test_stats_exists"]

# clean-fid's modes, as fastfid's preprocessing names.
MODES = {"clean": "clean", "legacy_pytorch": "pytorch-fid", "legacy_tensorflow": "legacy_tensorflow"}
EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "npy", "JPEG", "JPG", "PNG"}
_SIZE = (299, 299)


def stats_folder() -> Path:
    """Where custom statistics are kept: ``$FASTFID_HOME/cleanfid_stats``."""
    from fastfid.files.home import fastfid_home

    return fastfid_home() / "cleanfid_stats"


# --- features ------------------------------------------------------------------------------------
def _fastfid_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"Invalid mode {mode} specified")
    return MODES[mode]


def _check_model_name(model_name: str) -> None:
    if model_name == "clip_vit_b_32":
        raise ValueError("model_name='clip_vit_b_32' needs OpenAI's CLIP package and weights, which fastfid does not "
                         "ship: pass custom_feat_extractor=<your CLIP image encoder> instead")
    if model_name != "inception_v3":
        raise ValueError(f"The entered model name - {model_name} was not recognized.")


class _Features:
    """clean-fid's feature pipeline: images as float HWC 0–255 arrays, an optional custom transform,
    the mode's (or a custom) resize to 299 × 299, then the network (or a custom extractor, which
    receives float NCHW 0–255 batches as clean-fid's do)."""

    def __init__(self, mode: str, device, custom_feat_extractor=None, custom_image_tranform=None,
                 custom_fn_resize=None):
        self.mode = _fastfid_mode(mode)
        self.device = torch.device(device)
        self.transform, self.custom_resize = custom_image_tranform, custom_fn_resize
        self.custom = custom_feat_extractor
        self.network = None if custom_feat_extractor is not None else \
            FIDInceptionV3(2048, scaling=input_scaling(self.mode)).to(self.device)

    @property
    def feature_space(self) -> str | None:
        if self.network is None:
            return None
        return str(FeatureSpace(self.network.feature_space, self.mode, INPUT_SIZE))

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """One HWC image (uint8 or float 0–255) → float32 CHW in [0, 1] at 299 × 299."""
        if self.transform is not None:
            image = self.transform(image)
        if self.custom_resize is not None:
            resized = np.asarray(self.custom_resize(image), dtype=np.float32)
            return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))) / 255
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255)  # float in [0, 1]: resize_image's input
        return resize_image(pixels, _SIZE, self.mode)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        with torch.no_grad():
            if self.network is None:
                return torch.as_tensor(self.custom(batch * 255)).reshape(batch.shape[0], -1)
            return self.network(batch)


class _Files(torch.utils.data.Dataset):
    def __init__(self, files, archive, features: _Features):
        self.files, self.archive, self.features = files, archive, features

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        name = self.files[index]
        if self.archive is not None:
            with zipfile.ZipFile(self.archive) as archive, archive.open(name) as member:
                image = np.array(Image.open(member).convert("RGB"))
        elif name.endswith(".npy"):
            image = np.load(name)
        else:
            with Image.open(name) as opened:
                image = np.array(opened.convert("RGB"))
        return self.features.prepare(image)


def _folder_files(fdir: str, num=None, shuffle=False, seed=0):
    """clean-fid's listing: recursive, its extensions, sorted; a zip's image members."""
    if ".zip" in str(fdir):
        with zipfile.ZipFile(fdir) as archive:
            names = sorted(set(archive.namelist()))
        files, archive_path = [n for n in names if os.path.splitext(n)[1].lower()[1:] in EXTENSIONS], fdir
    else:
        if not os.path.isdir(fdir):
            raise FileNotFoundError(f"{fdir} is not a folder or a zip archive of images")
        files = sorted(f for ext in EXTENSIONS for f in glob(os.path.join(fdir, f"**/*.{ext}"), recursive=True))
        archive_path = None
    if not files:
        raise ValueError(f"{fdir} holds no images ({', '.join(sorted(EXTENSIONS))})")
    if num is not None:
        if shuffle:
            import random

            random.seed(seed)
            random.shuffle(files)
        files = files[:num]
    return files, archive_path


def _folder_batches(fdir, features: _Features, batch_size: int, num_workers: int, num=None, shuffle=False, seed=0):
    files, archive = _folder_files(fdir, num, shuffle, seed)
    loader = torch.utils.data.DataLoader(_Files(files, archive, features), batch_size=batch_size, shuffle=False,
                                         drop_last=False, num_workers=num_workers,
                                         worker_init_fn=functools.partial(die_with_parent, os.getpid()))
    for batch in loader:
        yield features(batch).double().cpu().numpy()


def _generator_batches(gen, features: _Features, num_gen: int, z_dim: int, batch_size: int):
    """Like clean-fid: full batches of z ~ N(0, I) on the device, images in [0, 255] NCHW, the last
    batch cut to ``num_gen``."""
    for first in range(0, num_gen, batch_size):
        z = torch.randn((batch_size, z_dim)).to(features.device)
        with torch.no_grad():
            images = gen(z)
        images = images[:min(batch_size, num_gen - first)]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the generator must return (N, 3, H, W) images in [0, 255], got {tuple(images.shape)}")
        host = images.detach().float().cpu().permute(0, 2, 3, 1).numpy().clip(0, 255)
        yield features(torch.stack([features.prepare(image) for image in host])).double().cpu().numpy()


def get_folder_features(fdir, model=None, num_workers=12, num=None, shuffle=False, seed=0, batch_size=128,
                        device=torch.device("cuda"), mode="clean", custom_fn_resize=None, description="", verbose=True,
                        custom_image_tranform=None) -> np.ndarray:
    """The (n, d) features of a folder or zip, as clean-fid's: ``model`` is a callable on float NCHW
    0–255 batches at 299 × 299 (None: the FID Inception for ``mode``)."""
    features = _Features(mode, device, model, custom_image_tranform, custom_fn_resize)
    if verbose:
        print(f"{description}computing features of {fdir}")
    return np.concatenate(list(_folder_batches(fdir, features, batch_size, num_workers, num, shuffle, seed)))


def _statistics(batches, feature_space, keep: bool = False):
    stats, kept = None, []
    for part in batches:
        stats = stats or FeatureStats(part.shape[1], feature_space=feature_space)
        stats.update(part)
        if keep:
            kept.append(part)
    if stats is None or (stats.count or 0) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    return stats, (np.concatenate(kept) if keep else None)


def _custom_file(name: str, mode: str, model_name: str, kid: bool = False) -> Path:
    modifier = "" if model_name == "inception_v3" else f"_{model_name}"
    return stats_folder() / f"{name}_{mode}{modifier}_custom_na{'_kid' if kid else ''}.npz".lower()


def _reference(dataset_name, dataset_res, dataset_split, mode, model_name, metric="FID"):
    if dataset_split != "custom":
        return _hosted(dataset_name, dataset_res, dataset_split, mode, model_name, metric)
    path = _custom_file(dataset_name, mode, model_name, kid=metric == "KID")
    if not path.exists():
        raise FileNotFoundError(f"no custom statistics named {dataset_name!r} for mode {mode!r} (looked for {path}); "
                                "make them with make_custom_stats")
    if metric == "KID":
        with np.load(path, allow_pickle=False) as data:
            return data["feats"]
    return FeatureStats.load(path)


def _hosted(dataset_name, dataset_res, dataset_split, mode, model_name, metric):
    """clean-fid's hosted statistics (or KID features) by its arguments, through fastfid's named
    references (fetched once into $FASTFID_HOME/references, checked at every read)."""
    from fastfid import references

    if model_name != "inception_v3":
        raise ValueError(f"clean-fid hosts {model_name} statistics fastfid does not list; compute them with "
                         "make_custom_stats and dataset_split='custom'")
    stem = f"clean-fid/{str(dataset_name).lower()}"
    name = f"{stem}/{str(dataset_split).lower()}/{dataset_res}/{mode}" + ("/kid" if metric == "KID" else "")
    if name not in references.REFERENCES:
        hosted = sorted({"/".join(n.split("/")[2:4]) for n in references.REFERENCES if n.startswith(stem + "/")})
        where = f"clean-fid hosts {dataset_name} as split/resolution {', '.join(hosted)}" if hosted else \
            f"clean-fid hosts no statistics of {dataset_name!r}"
        raise ValueError(f"no clean-fid statistics for dataset_name={dataset_name!r}, dataset_res={dataset_res}, "
                         f"dataset_split={dataset_split!r}, mode={mode!r}{', KID' if metric == 'KID' else ''}: {where} "
                         "(`fastfid references` lists them)")
    path = references.reference_path(name)
    if metric == "KID":
        with np.load(path, allow_pickle=False) as data:
            return data["feats"]
    return FeatureStats.load(path)


# --- the public functions ------------------------------------------------------------------------
def compute_fid(fdir1=None, fdir2=None, gen=None, mode="clean", model_name="inception_v3", num_workers=12,
                batch_size=32, device=torch.device("cuda"), dataset_name="FFHQ", dataset_res=1024,
                dataset_split="train", num_gen=50_000, z_dim=512, custom_feat_extractor=None, verbose=True,
                custom_image_tranform=None, custom_fn_resize=None, use_dataparallel=True):
    """FID between two folders, a folder and custom statistics, a generator and a folder, or a
    generator and custom statistics, as clean-fid computes it."""
    if custom_feat_extractor is None:
        _check_model_name(model_name)
    features = _Features(mode, device, custom_feat_extractor, custom_image_tranform, custom_fn_resize)
    space = features.feature_space

    def folder(path):
        if verbose:
            print(f"compute features of {path}")
        return _statistics(_folder_batches(path, features, batch_size, num_workers), space)[0]

    def model():
        return _statistics(_generator_batches(gen, features, num_gen, z_dim, batch_size), space)[0]

    if fdir1 is not None and fdir2 is not None:
        first, second = folder(fdir1), folder(fdir2)
    elif fdir1 is not None:
        first, second = folder(fdir1), _reference(dataset_name, dataset_res, dataset_split, mode, model_name)
    elif gen is not None and fdir2 is not None:
        # The folder first, as clean-fid: its DataLoader draws a seed from torch's generator, so the
        # other order would give the generator other latents under the same seed.
        second = folder(fdir2)
        first = model()
    elif gen is not None:
        first, second = model(), _reference(dataset_name, dataset_res, dataset_split, mode, model_name)
    else:
        raise ValueError("invalid combination of directories and models entered")
    return float(frechet_distance(first.mean, first.cov, second.mean, second.cov))


def compute_kid(fdir1=None, fdir2=None, gen=None, mode="clean", num_workers=12, batch_size=32,
                device=torch.device("cuda"), dataset_name="FFHQ", dataset_res=1024, dataset_split="train",
                num_gen=50_000, z_dim=512, verbose=True, use_dataparallel=True):
    """KID as clean-fid computes it: 100 subsets of min(n₁, n₂, 1000) samples drawn with numpy's
    global generator (``np.random.choice``), the kernel sums in float64 in fastfid's core."""
    features = _Features(mode, device)

    def folder(path):
        return np.concatenate(list(_folder_batches(path, features, batch_size, num_workers)))

    def model():
        return np.concatenate(list(_generator_batches(gen, features, num_gen, z_dim, batch_size)))

    if fdir1 is not None and fdir2 is not None:
        feats1, feats2 = folder(fdir1), folder(fdir2)
    elif fdir1 is not None:
        feats1 = folder(fdir1)
        feats2 = _reference(dataset_name, dataset_res, dataset_split, mode, "inception_v3", "KID")
    elif gen is not None and fdir2 is not None:
        feats2, feats1 = folder(fdir2), model()
    elif gen is not None:
        feats2 = _reference(dataset_name, dataset_res, dataset_split, mode, "inception_v3", "KID")
        feats1 = model()
    else:
        raise ValueError("invalid combination of directories and models entered")
    return kernel_distance(feats1, feats2)


def kernel_distance(feats1, feats2, num_subsets: int = 100, max_subset_size: int = 1000) -> float:
    """clean-fid's KID estimator: subsets of min(n₁, n₂, max_subset_size) (clean-fid shrinks rather
    than refuses), drawn from numpy's global generator in clean-fid's order."""
    m = min(feats1.shape[0], feats2.shape[0], max_subset_size)
    draws = []
    for _ in range(num_subsets):
        second = np.random.choice(feats2.shape[0], m, replace=False)
        first = np.random.choice(feats1.shape[0], m, replace=False)
        draws.append((second, first))
    return kid_of_subsets(feats2, feats1, draws).mean


def test_stats_exists(name, mode, model_name="inception_v3", metric="FID") -> bool:
    """Whether custom statistics ``name`` exist for ``mode``."""
    return _custom_file(name, mode, model_name, kid=metric == "KID").exists()


def remove_custom_stats(name, mode="clean", model_name="inception_v3") -> None:
    """Delete custom statistics ``name`` (both the FID and the KID file)."""
    for kid in (False, True):
        path = _custom_file(name, mode, model_name, kid)
        if not path.exists():
            raise Exception(f"The stats file {name} does not exist.")
        path.unlink()


def make_custom_stats(name, fdir, num=None, mode="clean", model_name="inception_v3", num_workers=0, batch_size=64,
                      device=torch.device("cuda"), verbose=True) -> None:
    """Statistics of a folder saved as custom statistics ``name`` for ``mode``: fastfid's exact
    statistics (readable by pytorch-fid and clean-fid: they carry mu and sigma) and the features for KID."""
    _check_model_name(model_name)
    path = _custom_file(name, mode, model_name)
    if path.exists():
        raise Exception(f"The statistics file {name} already exists. "
                        "Use remove_custom_stats function to delete it first.")
    features = _Features(mode, device)
    batches = _folder_batches(fdir, features, batch_size, num_workers, num=num)
    stats, feats = _statistics(batches, features.feature_space, keep=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"saving custom FID stats to {path}")
    stats.save(path)
    np.savez_compressed(_custom_file(name, mode, model_name, kid=True), feats=feats)

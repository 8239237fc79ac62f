"""pytorch-fid's ``fid_score`` module over fastfid: the same functions, arguments, return values,
``.npz`` files, command line and errors.

Differences, all on the side of exactness: statistics are accumulated in one streaming float64
pass (``calculate_activation_statistics`` keeps no activation array), the trace term is exact
(no sqrtm, no "Imaginary component" errors, no ``eps`` offset needed), and ``.npz`` inputs may
also be fastfid's or clean-fid's statistics files.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

from fastfid.compat.pytorch_fid.inception import InceptionV3
from fastfid.data import ImageFiles
from fastfid.distance import calculate_frechet_distance
from fastfid.stats import FeatureStats

__all__ = ["IMAGE_EXTENSIONS", "ImagePathDataset", "calculate_activation_statistics", "calculate_fid_given_paths",
           "calculate_frechet_distance", "compute_statistics_of_path", "get_activations", "main", "save_fid_stats"]

IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}


class ImagePathDataset(torch.utils.data.Dataset):
    """pytorch-fid's dataset of image paths: item ``i`` is ``files[i]`` opened by Pillow and converted to
    RGB, then passed through ``transforms`` when given (pytorch-fid passes ``ToTensor()``). Its users
    build their own loaders on it; fastfid's functions read images through fastfid's loader."""

    def __init__(self, files, transforms=None):
        self.files = files
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.open(self.files[i]).convert("RGB")
        return self.transforms(image) if self.transforms is not None else image


def _activation_batches(files, model, batch_size: int, dims: int, device, num_workers: int):
    """(n, dims) float64 activations of consecutive batches of ``files``, as pytorch-fid computes
    them: RGB in [0, 1] at the files' own size into ``model``, whose first output is pooled."""
    files = list(files)
    model.eval()
    if batch_size > len(files):
        print("Warning: batch size is bigger than the data size. Setting batch size to data size")
        batch_size = len(files)
    source = ImageFiles.from_paths(files)
    device = torch.device(device)
    for batch in source.batches(0, len(source), batch_size=batch_size, size=None, mode="pytorch-fid",
                                num_workers=num_workers, pin_memory=False):
        if batch.bad:
            raise OSError(f"cannot read {len(batch.bad)} image(s): {'; '.join(batch.bad[:3])}")
        with torch.no_grad():
            prediction = model(batch.images.to(device))[0]
        if prediction.size(2) != 1 or prediction.size(3) != 1:
            prediction = F.adaptive_avg_pool2d(prediction, output_size=(1, 1))
        yield prediction.squeeze(3).squeeze(2).to(torch.float64).cpu().numpy()


def get_activations(files, model, batch_size: int = 50, dims: int = 2048, device="cpu", num_workers: int = 1):
    """The (len(files), dims) activations of ``model``'s first output block for every image."""
    parts = list(_activation_batches(files, model, batch_size, dims, device, num_workers))
    return np.concatenate(parts) if parts else np.empty((0, dims))


def calculate_activation_statistics(files, model, batch_size: int = 50, dims: int = 2048, device="cpu",
                                    num_workers: int = 1):
    """(mu, sigma) of the activations, accumulated exactly batch by batch."""
    stats = FeatureStats(dims)
    for activations in _activation_batches(files, model, batch_size, dims, device, num_workers):
        stats.update(activations)
    if stats.count is None or stats.count < 2:
        raise ValueError(f"the statistics need at least 2 images, got {stats.count}")
    return stats.mean, stats.cov


def compute_statistics_of_path(path, model, batch_size: int, dims: int, device, num_workers: int = 1):
    """(mu, sigma) of a statistics ``.npz`` or of the images directly in a folder (pytorch-fid's
    extensions, lower case, not recursive)."""
    if str(path).endswith(".npz"):
        stats = FeatureStats.load(path)
        return stats.mean, stats.cov
    folder = pathlib.Path(path)
    files = sorted(file for ext in IMAGE_EXTENSIONS for file in folder.glob(f"*.{ext}"))
    return calculate_activation_statistics(files, model, batch_size, dims, device, num_workers)


def calculate_fid_given_paths(paths, batch_size: int, device, dims: int, num_workers: int = 1):
    """FID between two folders of images or statistics files."""
    for p in paths:
        if not os.path.exists(p):
            raise RuntimeError(f"Invalid path: {p}")
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).to(device)
    m1, s1 = compute_statistics_of_path(paths[0], model, batch_size, dims, device, num_workers)
    m2, s2 = compute_statistics_of_path(paths[1], model, batch_size, dims, device, num_workers)
    return calculate_frechet_distance(m1, s1, m2, s2)


def save_fid_stats(paths, batch_size: int, device, dims: int, num_workers: int = 1) -> None:
    """Statistics of the folder ``paths[0]`` saved to ``paths[1]`` as pytorch-fid's ``.npz`` (mu, sigma)."""
    if not os.path.exists(paths[0]):
        raise RuntimeError(f"Invalid path: {paths[0]}")
    if os.path.exists(paths[1]):
        raise RuntimeError(f"Existing output file: {paths[1]}")
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).to(device)
    print(f"Saving statistics for {paths[0]}")
    m1, s1 = compute_statistics_of_path(paths[0], model, batch_size, dims, device, num_workers)
    np.savez_compressed(paths[1], mu=m1, sigma=s1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastfid.compat.pytorch_fid",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=50, help="Batch size to use")
    parser.add_argument("--num-workers", type=int,
                        help="Number of processes to use for data loading. Defaults to `min(8, num_cpus)`")
    parser.add_argument("--device", type=str, default=None, help="Device to use. Like cuda, cuda:0 or cpu")
    parser.add_argument("--dims", type=int, default=2048, choices=list(InceptionV3.BLOCK_INDEX_BY_DIM),
                        help="Dimensionality of Inception features to use. By default, uses pool3 features")
    parser.add_argument("--save-stats", action="store_true",
                        help="Generate an npz archive from a directory of samples. The first path is used as input "
                             "and the second as output.")
    parser.add_argument("path", type=str, nargs=2, help="Paths to the generated images or to .npz statistic files")
    return parser


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    device = torch.device(args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.num_workers is None:
        num_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_workers = min(num_cpus, 8) if num_cpus is not None else 0
    else:
        num_workers = args.num_workers
    if args.save_stats:
        save_fid_stats(args.path, args.batch_size, device, args.dims, num_workers)
        return
    print("FID: ", calculate_fid_given_paths(args.path, args.batch_size, device, args.dims, num_workers))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])

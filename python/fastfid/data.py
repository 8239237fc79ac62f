"""Images in, float batches out: folders, zip archives, arrays, tensors and generators, with the two
resize modes. Needs torch and Pillow.

Every source yields :class:`Batch` objects for a range of its items, in order: float32 images in
[0, 1], NCHW, at the requested size. Files are decoded and resized by DataLoader workers; an image
that cannot be read is reported by name (or skipped and counted).

Resize modes, as the published numbers were made (fastfid.resize_modes has the table):

- ``"pytorch-fid"``: bilinear with half-pixel centres and no antialiasing, on [0, 1] floats
  (``F.interpolate(..., mode="bilinear", align_corners=False)``), as pytorch-fid's network does.
- ``"torch-fidelity"`` and ``"legacy_tensorflow"``: TensorFlow 1's ``resize_bilinear``: output pixel
  i samples the input at i·in/out (no half-pixel centres), clamped at the last pixel, on [0, 255].
- ``"torchmetrics"``: torchmetrics' default, bilinear with half-pixel centres and antialiasing, on [0, 255].
- ``"clean"``: clean-fid's: each channel as a float image in [0, 255], PIL bicubic (antialiased
  when shrinking), clipped to [0, 255].

The representation spaces (fastfid.models.spaces) add two operations on the decoded 8-bit image:

- ``"pil-bicubic-squash"``: PIL's bicubic resize to size × size (torchvision's ``Resize((s, s))`` on a
  PIL image, as dgm-eval does);
- ``"pil-bicubic-crop"``: the shorter side to size by PIL's bicubic (the longer one to
  ``int(size · long / short)``), then the centre square (torchvision's ``Resize(s)`` and
  ``CenterCrop(s)``, as open_clip does).

On tensors (arrays, generators, the loss) both run as torch's antialiased bicubic, PIL's filter
without its rounding to 8 bits, so that gradients pass.

- ``"torch-bicubic"``: EDM2's DINOv2 resize (``resize_mode='torch'``): torch's antialiased bicubic of the
  8-bit values straight to size × size, neither rounded nor clipped, on images and tensors alike.
- ``"pil-bicubic-centre"``: CMMD's: the centre square (corner rounded down), then PIL's bicubic to size ×
  size (on tensors: torch's antialiased bicubic); ``"torch-bicubic-centre"``: cmmd-pytorch's, the same
  square then torch's bicubic without antialiasing of the 8-bit values.

Every mode returns [0, 1] floats; the network scales them as its mode says (resize_modes.input_scaling).
A source can resize each image several ways in one decode (``plans``: one (size, mode) per network).
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fastfid._hashing import stream_sha256
from fastfid.files.arrays import file_fingerprint
from fastfid.resize_modes import RESIZE_MODES, check_resize  # noqa: F401  (part of this module's interface)

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
_CHANNELS = (1, 3, 4)


@dataclass
class Batch:
    """Images of consecutive items (None if all were bad), how many items were read, and the
    items that could not be read ("name: reason")."""

    images: torch.Tensor | None
    attempted: int
    bad: list[str] = field(default_factory=list)
    views: tuple = ()
    """With several plans: the images resized by each, in order (``images`` is the first)."""


def _plans(size, mode: str, plans) -> tuple:
    return tuple(plans) if plans else ((size, mode),)


def _batch(views: tuple | None, attempted: int, bad: list[str] | None = None) -> Batch:
    return Batch(None if views is None else views[0], attempted, bad or [], () if views is None else views)


# --- one image, one batch ----------------------------------------------------------------------
def resize_image(rgb: np.ndarray, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """One decoded (H, W, 3) image, uint8 or float32 in [0, 1] (16-bit and float files) → float32
    (3, h, w) in [0, 1] at ``size`` (None: as is)."""
    unit = np.float32(255) if rgb.dtype == np.uint8 else np.float32(1)
    if mode.startswith("pil-bicubic-") and size is not None:
        return torch.from_numpy(_pil_bicubic(rgb, size, mode))
    if mode == "clean" and size is not None:
        return torch.from_numpy(_clean_resize(rgb.astype(np.float32) * (255 / unit), size) / np.float32(255))
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(torch.float32).div(float(unit))
    return resize_batch(image[None], size, mode)[0]


def _clean_resize(hwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255] → float32 (3, h, w) in [0, 255], one PIL bicubic per channel."""
    from PIL import Image

    height, width = size
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(hwc[:, :, c])).resize(
        (width, height), Image.Resampling.BICUBIC)) for c in range(hwc.shape[2])]
    return np.clip(np.stack(channels), 0, 255)


def _pil_bicubic(rgb: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """(H, W, 3) uint8, or float32 in [0, 1] → float32 (3, h, w) in [0, 1] by PIL's bicubic, squashed,
    shorter side then centre crop, or centre square then resized. 8-bit images are resized as 8-bit
    images (rounded, as PIL does)."""
    from PIL import Image

    if mode == "pil-bicubic-centre":
        rgb, mode = _centre_square(rgb), "pil-bicubic-squash"
    target = _resized_size(rgb.shape[:2], size, mode)
    if rgb.dtype == np.uint8:
        resized = np.asarray(Image.fromarray(rgb).resize(target[::-1], Image.Resampling.BICUBIC), dtype=np.float32)
        chw = resized.transpose(2, 0, 1) / np.float32(255)
    else:
        chw = np.clip(np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32)).resize(
            target[::-1], Image.Resampling.BICUBIC)) for c in range(3)]), 0, 1)
    top, left = _crop_corner(target, size)
    return np.ascontiguousarray(chw[:, top:top + size[0], left:left + size[1]])


def _centre_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of an image's centre square: side min(H, W), the corner rounded down (CMMD's crop)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _centre_square(hwc: np.ndarray) -> np.ndarray:
    top, left, side = _centre_box(hwc.shape[0], hwc.shape[1])
    return hwc[top:top + side, left:left + side]


def _resized_size(shape, size: tuple[int, int], mode: str) -> tuple[int, int]:
    """(h, w) before the crop: ``size`` when squashing; the shorter side to size otherwise (torchvision's rule)."""
    if mode == "pil-bicubic-squash":
        return int(size[0]), int(size[1])
    if mode != "pil-bicubic-crop":
        raise ValueError(f"unknown image operation {mode!r}")
    height, width = int(shape[0]), int(shape[1])
    short = int(min(size))
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _crop_corner(resized: tuple[int, int], size) -> tuple[int, int]:
    """The centre crop's top-left corner, rounded as torchvision's CenterCrop rounds it."""
    return int(round((resized[0] - size[0]) / 2.0)), int(round((resized[1] - size[1]) / 2.0))


def as_image_batch(images, name: str = "images") -> torch.Tensor:
    """A batch of images → float32 NCHW RGB in [0, 1], on the input's device (numpy arrays become CPU
    tensors). Accepts uint8 (values 0–255) or float (values in [0, 1]), NHWC or NCHW, with 1 (gray),
    3 (RGB) or 4 (RGBA, alpha dropped) channels. When both layouts are possible (an image 3 or 4 pixels
    wide), uint8 is read as NHWC and float as NCHW."""
    if isinstance(images, np.ndarray):
        array = np.ascontiguousarray(images)
        # A read-only (memory-mapped) slice is read into memory here, once: torch needs writable buffers.
        images = torch.from_numpy(array if array.flags.writeable else array.copy())
    x = images
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(images).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D batch (N, H, W, C) or (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    first, last = x.shape[1] in _CHANNELS, x.shape[-1] in _CHANNELS
    if not (first or last):
        raise ValueError(f"{name} of shape {tuple(x.shape)} has no channel axis of size 1, 3 or 4 "
                         "(expected NHWC or NCHW)")
    if last and (not first or x.dtype == torch.uint8):
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div(255)
    elif x.is_floating_point():
        x = x.detach().to(torch.float32)
        low, high = torch.aminmax(x)  # one small device sync per batch: a wrong range is a silent wrong FID
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError(f"{name} contain NaN or Inf values")
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(f"float {name} must lie in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}] "
                             "(map [-1, 1] outputs with (x + 1) / 2, or pass uint8 images)")
        x = x.clamp(0, 1)
    else:
        raise TypeError(f"{name} must be uint8 (0-255) or floating point (0-1), got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3]
    return x


def resize_batch(images: torch.Tensor, size: tuple[int, int] | None, mode: str) -> torch.Tensor:
    """float NCHW [0, 1] → the same at ``size``, by ``mode`` (``"clean"`` goes through PIL on the CPU)."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    size = (int(size[0]), int(size[1]))
    if mode.endswith("-centre"):  # the centre square first, then the resize of it to size × size
        top, left, side = _centre_box(images.shape[-2], images.shape[-1])
        square = images[..., top:top + side, left:left + side]
        if mode == "torch-bicubic-centre":  # cmmd-pytorch's: no antialiasing, neither rounded nor clipped
            return F.interpolate(square * 255, size=size, mode="bicubic", align_corners=False) / 255
        images, mode = square, "pil-bicubic-squash"
        if tuple(images.shape[-2:]) == size:
            return images
    if mode.startswith("pil-bicubic-"):  # PIL's filter, in float (differentiable), then the crop
        target = _resized_size(images.shape[-2:], size, mode)
        resized = F.interpolate(images * 255, size=target, mode="bicubic", align_corners=False, antialias=True)
        top, left = _crop_corner(target, size)
        return resized[..., top:top + size[0], left:left + size[1]].clamp(0, 255) / 255
    if mode == "pytorch-fid":
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    if mode == "torch-bicubic":  # EDM2's DINOv2 resize, on 0-255 floats, neither rounded nor clipped
        return F.interpolate(images * 255, size=size, mode="bicubic", align_corners=False, antialias=True) / 255
    # The other modes resize pixel values 0–255, as their libraries do, so that rounding matches theirs.
    pixels = images * 255
    if mode == "torchmetrics":
        resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
    elif mode in ("torch-fidelity", "legacy_tensorflow"):
        resized = tf1_bilinear(pixels, size)
    else:
        host = pixels.permute(0, 2, 3, 1).cpu().numpy()
        resized = torch.from_numpy(np.stack([_clean_resize(image, size) for image in host])).to(images.device)
    return resized / 255


def tf1_bilinear(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (align_corners=False): output pixel i samples the input at
    x = i·in/out in float32 (not at half-pixel centres), between floor(x) and its right neighbour
    clamped to the image, weighted by x − floor(x); rows after columns, as TensorFlow."""
    def axis(n_in: int, n_out: int):
        position = torch.arange(n_out, dtype=torch.float32, device=images.device) * torch.tensor(
            n_in / n_out, dtype=torch.float32)
        low = position.long()
        return low, (low + 1).clamp_max(n_in - 1), (position - low.float()).to(images.dtype)

    top, bottom, dy = axis(images.shape[-2], size[0])
    left, right, dx = axis(images.shape[-1], size[1])
    upper, lower = images[..., top, :], images[..., bottom, :]
    upper = upper[..., left] + (upper[..., right] - upper[..., left]) * dx
    lower = lower[..., left] + (lower[..., right] - lower[..., left]) * dx
    return upper + (lower - upper) * dy[:, None]


# --- sources -----------------------------------------------------------------------------------
class ImageFiles:
    """Image files in a folder (recursive) or a zip archive, in sorted order."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            self.archive = None
            self.names = sorted(_image_files(self.path))
        elif zipfile.is_zipfile(self.path):
            self.archive = self.path
            with zipfile.ZipFile(self.path) as archive:
                members = [info for info in archive.infolist()
                           if info.filename.lower().endswith(IMAGE_EXTENSIONS)
                           and not info.filename.startswith("__MACOSX/")
                           and not Path(info.filename).name.startswith(".")]
            names = [info.filename for info in members]
            repeated = sorted(name for name, times in Counter(names).items() if times > 1)
            if repeated:
                raise ValueError(f"{self.path} holds several members named {repeated[0]!r} ({len(repeated)} names "
                                 "repeated): only the last of each could be read; rebuild the archive")
            self.names = sorted(names)
            self._zip_identity = {info.filename: (info.file_size, info.CRC) for info in members}
        else:
            raise ValueError(f"{self.path} is neither a folder nor a zip archive of images")
        if not self.names:
            raise ValueError(f"{self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")

    @classmethod
    def from_paths(cls, paths) -> "ImageFiles":
        """Given image files, in the given order (pytorch-fid's functions take a list of paths)."""
        paths = [Path(p).resolve() for p in paths]
        if not paths:
            raise ValueError("no image files were given")
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise FileNotFoundError(f"image file {missing} does not exist")
        files = cls.__new__(cls)
        files.path = Path(os.path.commonpath([p.parent for p in paths]))
        files.archive = None
        files.names = [str(p.relative_to(files.path)) for p in paths]
        return files

    def __len__(self) -> int:
        return len(self.names)

    @property
    def description(self) -> str:
        return str(self.path.resolve())

    needs_network = True
    checks_items = True  # see item_identity

    def fingerprint(self, content: bool = False) -> str:
        """Identifies the listing (the names, in order), so that a resumed job knows the folder did not
        change under it; what each file holds is :meth:`item_identity`'s."""
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()

    def item_identity(self, index: int, content: bool = False) -> str:
        """What determines item ``index``'s features: the file's size and modification time (in an
        archive: size and CRC), or with ``content`` its SHA-256 (which reads it)."""
        name = self.names[index]
        if content and self.archive:
            with zipfile.ZipFile(self.path) as archive, archive.open(name) as member:
                return stream_sha256(member)
        if content:
            try:
                # Opened without blocking and checked before reading: a FIFO named like an image (the
                # loader skips it) would otherwise wait for a writer for ever.
                descriptor = os.open(self.path / name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
                with open(descriptor, "rb") as handle:
                    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                        return "not a regular file"
                    return stream_sha256(handle)
            except OSError as error:
                return f"unreadable: {error.strerror}"
        if self.archive:
            return "%d %d" % self._zip_identity[name]
        try:
            info = os.stat(self.path / name)
        except OSError as error:
            return f"unreadable: {error.strerror}"
        return f"{info.st_size} {info.st_mtime_ns}"

    def batches(self, start: int, stop: int, *, batch_size: int, size=None, mode: str = "pytorch-fid", num_workers: int,
                pin_memory: bool, device=None, plans=None):
        from torch.utils.data import DataLoader, Subset

        dataset = _DecodedImages(self.path, self.archive is not None, self.names, _plans(size, mode, plans))
        loader: Any = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, pin_memory=pin_memory, collate_fn=_collate,
                            worker_init_fn=functools.partial(_init_worker, os.getpid()))
        for images, attempted, bad, mixed_sizes in loader:
            if mixed_sizes:
                raise ValueError(f"{self.path}: images of different sizes in one batch ({mixed_sizes}): "
                                 "give an image size to resize them to")
            yield _batch(images, attempted, bad)


def _image_files(root: Path) -> list[str]:
    """Image files below ``root``, following symlinked folders (datasets are often assembled from
    links) but reading each real folder once: a link cycle cannot loop, and a folder linked twice is
    not counted twice."""
    seen, found = set(), []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()  # walked in name order, so which path reaches a linked folder first is fixed
        found += [str(Path(folder, name).relative_to(root)) for name in names
                  if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")]
    return found


class _DecodedImages(torch.utils.data.Dataset):
    """torch Dataset: item i → (float32 CHW image or None, "file: reason" or None). It never raises, so that
    a bad file is reported by name from the main process rather than as a worker's traceback."""

    def __init__(self, root: Path, is_archive: bool, names: list[str], plans: tuple):
        self.root, self.is_archive, self.names, self.plans = root, is_archive, names, plans
        self._archive: zipfile.ZipFile | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self):
        return {**self.__dict__, "_archive": None}

    def __getitem__(self, index: int):
        name = self.names[index]
        label = f"{self.root}:{name}" if self.is_archive else str(self.root / name)
        try:
            return self._decode(name), None
        except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
            return None, f"{label}: {type(error).__name__}: {error}"

    def _decode(self, name: str) -> tuple:
        from PIL import Image

        if self.is_archive:
            if self._archive is None:
                self._archive = zipfile.ZipFile(self.root)
            archive: zipfile.ZipFile = self._archive
            handle = archive.open(name)
        else:
            path = self.root / name
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block the reader forever
                raise OSError("not a regular file (a FIFO, socket or device named like an image)")
            handle = open(path, "rb")
        with handle, Image.open(handle) as image:
            refuse_narrowed(image)
            image.load()  # decode now: a truncated file fails here, inside the try
            rgb = as_rgb(image)
        return tuple(resize_image(rgb, size, mode) for size, mode in self.plans)  # decoded once, resized per plan


# Pillow's modes of more than 8 bits per channel, which convert("RGB") clips instead of scaling;
# PNG and TIFF store at most 16 bits per integer sample.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_FULL_SCALE = 65535


def refuse_narrowed(image) -> None:
    """Refuse, before decoding, an image that Pillow would narrow to 8 bits without a word: colour
    (RGB, RGBA) PNGs of 16 bits per sample, which it opens as 8-bit RGB from each sample's high byte
    (3.8e-3 off the true value); 16-bit grayscale is read at full depth (as_rgb)."""
    raw = image.tile[0][3] if image.tile and isinstance(image.tile[0][3], str) else ""  # (codec, box, offset, rawmode)
    if image.mode in ("RGB", "RGBA") and raw.endswith(";16B"):
        raise ValueError(f"a 16-bit {image.mode} PNG: Pillow reads only the high byte of each sample, which would "
                         "change its features silently; convert it to 8 bits per sample first")


def as_rgb(image) -> np.ndarray:
    """A decoded image → (H, W, 3): uint8 for 8-bit images; float32 in [0, 1] for 16-bit ones
    (scaled by 65535) and float ones (which must lie in [0, 1]). Never clipped silently."""
    if image.mode in _WIDE_INTEGER_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "F":
            if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 1):
                raise ValueError(f"a float image with values in [{low:.4g}, {high:.4g}]: fastfid reads float images "
                                 "in [0, 1]; rescale it or save it as 8- or 16-bit")
            gray = values
        else:
            full_scale = _SIXTEEN_BIT_FULL_SCALE
            if low < 0 or high > full_scale:
                raise ValueError(f"a {image.mode} image with values in [{low:g}, {high:g}], beyond 16 bits: "
                                 "save it as 8- or 16-bit")
            gray = values / full_scale
        return np.repeat(gray.astype(np.float32)[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))  # writable, so torch can share it


def _collate(items):
    good = [views for views, _ in items if views is not None]
    bad = [error for _, error in items if error is not None]
    if not good:
        return None, len(items), bad, None
    stacked = []
    for plan in range(len(good[0])):
        images = [views[plan] for views in good]
        shapes = sorted({tuple(image.shape[1:]) for image in images})
        if len(shapes) > 1:
            return None, len(items), bad, f"{shapes[0]} and {shapes[-1]}"
        out = torch.empty((len(images),) + tuple(images[0].shape), dtype=images[0].dtype)
        if torch.utils.data.get_worker_info() is not None:
            out.share_memory_()  # stacked straight into shared memory: no copy when it crosses to the main process
        stacked.append(torch.stack(images, out=out))
    return tuple(stacked), len(items), bad, None


def _init_worker(parent: int, _worker: int):
    import signal

    torch.set_num_threads(1)  # the workers already run in parallel; threads within them would oversubscribe
    # Ctrl-C reaches the whole process group: the main process stops the job (and the loader with it),
    # so the workers must not each print a traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def die_with_parent(parent: int, _worker: int | None = None) -> None:
    """In a loader worker whose job runs as process ``parent``: have the kernel kill this process when
    its parent dies (Linux's PR_SET_PDEATHSIG), so that a job killed with SIGKILL takes its workers
    with it at once, rather than within torch's 5 s watchdog. Elsewhere, torch's watchdog alone.
    (Usable as a worker_init_fn: functools.partial(die_with_parent, os.getpid()).)"""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the job died before the request took effect: follow it now
        os._exit(1)


class ImageArray:
    """A numpy array (memory-mapped .npy included) or torch tensor of images, sliced in order."""

    def __init__(self, images, description: str = "array"):
        shape = tuple(images.shape)
        if len(shape) != 4:
            raise ValueError(f"an image array must be 4-D (N, H, W, C) or (N, C, H, W), got shape {shape}")
        self.images, self._description = images, description

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def description(self) -> str:
        return self._description

    def fingerprint(self, content: bool = False) -> str:
        return file_fingerprint(self._description, f"{tuple(self.images.shape)} {self.images.dtype}", content)

    needs_network = True
    checks_items = False  # the whole array's fingerprint covers every item

    def item_identity(self, index: int, content: bool = False) -> str:
        raise NotImplementedError("an array's items are identified by its fingerprint")

    def batches(self, start: int, stop: int, *, batch_size: int, size=None, mode: str = "pytorch-fid", device=None,
                plans=None, **_):
        for first in range(start, stop, batch_size):
            chunk = self.images[first:min(stop, first + batch_size)]
            views = _on_device(chunk, f"images {first}-{first + chunk.shape[0] - 1}", device, _plans(size, mode, plans))
            yield _batch(views, chunk.shape[0])


class ImageGenerator:
    """A callable ``generate(n) -> images`` (numpy or torch, on any device), called for ``num_samples`` in all."""

    def __init__(self, generate, num_samples: int | None):
        if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"a generator source needs num_samples, a positive integer; got {num_samples!r}")
        self.generate, self.num_samples = generate, int(num_samples)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def description(self) -> str:
        return f"{getattr(self.generate, '__qualname__', type(self.generate).__name__)}()"

    def fingerprint(self, content: bool = False) -> str:
        return str(self.num_samples)

    needs_network = True
    checks_items = False  # a generator's output cannot be checked

    def item_identity(self, index: int, content: bool = False) -> str:
        raise NotImplementedError("a generator's output cannot be identified")

    def batches(self, start: int, stop: int, *, batch_size: int, size=None, mode: str = "pytorch-fid", device=None,
                plans=None, **_):
        for first in range(start, stop, batch_size):
            wanted = min(stop, first + batch_size) - first
            views = _on_device(self.generate(wanted), "generated images", device, _plans(size, mode, plans))
            if views[0].shape[0] != wanted:
                raise ValueError(f"the generator returned {views[0].shape[0]} images when asked for {wanted}")
            yield _batch(views, wanted)


def _on_device(images, name: str, device, plans: tuple) -> tuple:
    """User images (array or tensor) → a float batch on ``device`` per plan: resized there, so that
    the resize of a GPU source runs on the GPU."""
    images = as_image_batch(images, name)
    if device is not None:
        images = images.to(device, non_blocking=True)
    return tuple(resize_batch(images, size, mode) for size, mode in plans)

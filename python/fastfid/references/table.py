"""The reference statistics papers compare against, by name: every file clean-fid, EDM, EDM2 and
ADM host, with the address their own code builds for it, its format, the features and preprocessing
it holds, its image count and its SHA-256 where the publisher gives one (none of the four does: the
hash is recorded at the first download and checked at every later read).

Names: ``clean-fid/{dataset}/{split}/{resolution}/{mode}`` (``.../kid`` for clean-fid's KID
features), ``edm/{dataset}``, ``edm2/{dataset}``, ``adm/{dataset}``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FORMATS", "NamedReference", "REFERENCES", "get_reference", "is_reference_name", "reference_names"]

FORMATS = {
    "mu-sigma": "a .npz of mu and sigma (pytorch-fid's layout)",
    "kid-features": "a .npz of feats, the reference's Inception features (clean-fid's KID files)",
    "edm2-pickle": "a pickle of {num_images, fid: {mu, sigma}, fd_dinov2: {mu, sigma}}",
    "adm-batch": "an ADM reference batch: arr_0 (uint8 NHWC images) with mu, sigma, mu_s, sigma_s",
}


@dataclass(frozen=True)
class NamedReference:
    """One published reference file."""

    name: str
    publisher: str
    url: str
    """The address the publisher's own code builds (kept as built, e.g. clean-fid's double slash)."""
    format: str
    """A key of :data:`FORMATS`."""
    spaces: tuple[str, ...]
    """The feature spaces it holds statistics of (fastfid.models.space_names())."""
    resize: str
    """The preprocessing of its images, as fastfid names the mode (for Inception's space)."""
    images: int | None
    """How many images its statistics summarise (None where the publisher does not say)."""
    sha256: str | None = None
    """The publisher's SHA-256 (None: not published; recorded at the first download)."""
    note: str = ""

    def resize_for(self, space: str) -> str:
        """The preprocessing of the images behind its statistics of ``space``."""
        if space == "dinov2-vit-l14" and self.publisher == "edm2":
            return "edm2"  # EDM2's FD_DINOv2: torch's antialiased bicubic (its resize_mode='torch')
        return self.resize

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        """Its folder under the references cache: the publisher's."""
        return self.publisher


# --- clean-fid --------------------------------------------------------------------------------
_CLEAN_FID_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"  # features.py's base_url
# clean-fid's modes and fastfid's preprocessing of the same name.
_CLEAN_FID_MODES = {"clean": "clean", "legacy_tensorflow": "legacy_tensorflow", "legacy_pytorch": "pytorch-fid"}
ALL_MODES = tuple(_CLEAN_FID_MODES)
# (dataset, resolution, split, images, modes) as clean-fid's README lists them.
_CLEAN_FID = [
    ("cifar10", 32, "train", 50_000, ALL_MODES),
    ("cifar10", 32, "test", 10_000, ALL_MODES),
    ("ffhq", 1024, "trainval", 50_000, ALL_MODES),
    ("ffhq", 256, "trainval", 50_000, ALL_MODES),
    ("ffhq", 1024, "trainval70k", 70_000, ALL_MODES),
    ("ffhq", 256, "trainval70k", 70_000, ALL_MODES),
    ("lsun_church", 256, "train", 50_000, ALL_MODES),
    ("lsun_church", 256, "trainfull", None, ("clean",)),
    ("lsun_horse", 256, "train", 50_000, ALL_MODES),
    ("lsun_horse", 256, "trainfull", None, ("clean",)),
    ("lsun_cat", 256, "train", 50_000, ALL_MODES),
    ("lsun_cat", 256, "trainfull", 1_657_264, ALL_MODES),
    ("afhq_cat", 512, "train", 5_153, ALL_MODES),
    ("afhq_dog", 512, "train", 4_739, ALL_MODES),
    ("afhq_wild", 512, "train", 4_738, ALL_MODES),
    ("brecahad", 512, "train", 1_944, ALL_MODES),
    ("metfaces", 1024, "train", 1_336, ALL_MODES),
    ("horse2zebra", 256, "test", 140, ALL_MODES),
    ("cat2dog", 256, "test", 500, ALL_MODES),
]
# clean-fid precomputes KID features only for these (its README).
_CLEAN_FID_KID = ("afhq_cat", "afhq_dog", "afhq_wild", "brecahad", "metfaces")


def _clean_fid() -> list[NamedReference]:
    entries = []
    for dataset, resolution, split, images, modes in _CLEAN_FID:
        for mode in modes:
            stem = f"{dataset}_{mode}_{split}_{resolution}".lower()  # features.py's rel_path
            name = f"clean-fid/{dataset}/{split}/{resolution}/{mode}"
            entries.append(NamedReference(name, "clean-fid", f"{_CLEAN_FID_URL}/{stem}.npz", "mu-sigma", ("inception",),
                                          _CLEAN_FID_MODES[mode], images))
            if dataset in _CLEAN_FID_KID:
                entries.append(NamedReference(f"{name}/kid", "clean-fid", f"{_CLEAN_FID_URL}/{stem}_kid.npz",
                                              "kid-features", ("inception",), _CLEAN_FID_MODES[mode], images))
    return entries


# --- NVIDIA: EDM and EDM2 ---------------------------------------------------------------------
_EDM_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"
_EDM2_URL = "https://nvlabs-fi-cdn.nvidia.com/edm2/dataset-refs/"
_DETECTOR = ("the statistics of NVIDIA's detector (inception-2015-12-05.pt), which fastfid's legacy_tensorflow "
             "resize on pytorch-fid's weights equals to 1e-4 of pool3")


def _nvidia() -> list[NamedReference]:
    edm = [("cifar10-32x32", 50_000), ("ffhq-64x64", 70_000), ("afhqv2-64x64", None), ("imagenet-64x64", None)]
    entries = [NamedReference(f"edm/{dataset}", "edm", f"{_EDM_URL}{dataset}.npz", "mu-sigma", ("inception",),
                              "legacy_tensorflow", images, note=_DETECTOR) for dataset, images in edm]
    entries += [NamedReference(f"edm2/{dataset}", "edm2", f"{_EDM2_URL}{dataset}.pkl", "edm2-pickle",
                               ("inception", "dinov2-vit-l14"), "legacy_tensorflow", None,
                               note=f"{_DETECTOR}; FD_DINOv2 with --resize edm2; the count is in the file")
                for dataset in ("img512", "img64")]
    return entries


# --- ADM ------------------------------------------------------------------------------------------
_ADM_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/"


def _adm() -> list[NamedReference]:
    batches = [("imagenet64", "imagenet/64/VIRTUAL_imagenet64_labeled.npz", 10_000),
               ("imagenet128", "imagenet/128/VIRTUAL_imagenet128_labeled.npz", 10_000),
               ("imagenet256", "imagenet/256/VIRTUAL_imagenet256_labeled.npz", 10_000),
               ("imagenet512", "imagenet/512/VIRTUAL_imagenet512.npz", 1_000),
               ("lsun-bedroom256", "lsun/bedroom/VIRTUAL_lsun_bedroom256.npz", 10_000),
               ("lsun-cat256", "lsun/cat/VIRTUAL_lsun_cat256.npz", 10_000),
               ("lsun-horse256", "lsun/horse/VIRTUAL_lsun_horse256.npz", 10_000)]
    return [NamedReference(f"adm/{dataset}", "adm", f"{_ADM_URL}{path}", "adm-batch", ("inception",), "torch-fidelity",
                           images, note="images for precision and recall (the count); mu, sigma, mu_s, sigma_s of "
                                        "the whole training set; read by `fastfid adm`")
            for dataset, path, images in batches]


REFERENCES: dict[str, NamedReference] = {entry.name: entry for entry in [*_clean_fid(), *_nvidia(), *_adm()]}


def reference_names() -> tuple[str, ...]:
    return tuple(REFERENCES)


def get_reference(name: str) -> NamedReference:
    try:
        return REFERENCES[name]
    except KeyError:
        publisher = name.split("/", 1)[0]
        close = [n for n in REFERENCES if n.startswith(publisher + "/")][:5]
        hint = f"; {publisher}'s include {', '.join(close)}" if close else \
            f"; the publishers are {', '.join(sorted({r.publisher for r in REFERENCES.values()}))}"
        raise ValueError(f"unknown reference {name!r}{hint} (`fastfid references` lists them all)") from None


def is_reference_name(text) -> bool:
    return isinstance(text, str) and text in REFERENCES

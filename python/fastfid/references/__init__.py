"""Named references: the statistics papers compare against, fetched from their publishers (or a
mirror) by name, checked and kept under ``$FASTFID_HOME/references``. A name is accepted wherever a
statistics file is (``fastfid fid generated/ clean-fid/cifar10/train/32/clean``,
``fastfid.compute_fid(gen, "edm/cifar10-32x32")``, ``fastfid adm adm/imagenet256 samples.npz``,
``fastfid.Reference("edm2/img512")``); ``fastfid references`` lists them."""

from __future__ import annotations

import os

from fastfid.references.store import MIRROR_VARIABLE, cached, fetch, reference_path, references_dir, source_url
from fastfid.references.table import FORMATS, REFERENCES, NamedReference, get_reference, is_reference_name, \
    reference_names

__all__ = ["FORMATS", "MIRROR_VARIABLE", "REFERENCES", "NamedReference", "cached", "fetch", "get_reference",
           "is_reference_name", "named", "reference_names", "reference_path", "references_dir", "resolve",
           "source_url"]


def named(source) -> NamedReference | None:
    """The reference a source names (a string that is a reference's name and no file or folder here)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, str) and is_reference_name(text) and not os.path.exists(text):
            return get_reference(text)
    return None


def resolve(source, *, progress: bool = True):
    """A reference's name → the path of its checked file (fetched first if needed); anything else as
    it is."""
    reference = named(source)
    return source if reference is None else reference_path(reference.name, progress=progress)

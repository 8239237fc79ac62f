"""The label statistics carry to say what their features are: ``"<network> resize=<mode> <H>x<W>"``
(or ``native size``), e.g. ``FIDInceptionV3(dims=2048, weights=pt_inception-2015-12-05-6726825d)
resize=pytorch-fid 299x299``. Written by :class:`FeatureSpace` and read back by
:meth:`FeatureSpace.parse`, nowhere else. Torch-free."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"(\d+)x(\d+)")
_NATIVE = "native size"


@dataclass(frozen=True)
class FeatureSpace:
    """What features are: the ``network`` (its own label: layer, weights), and how images reached it,
    ``resize`` (a mode of fastfid.resize_modes or of the spaces; None when not said) at ``size``
    ((height, width); None: the images' own size)."""

    network: str
    resize: str | None = None
    size: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.resize is None:
            return self.network
        where = _NATIVE if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return f"{self.network} resize={self.resize} {where}"

    @classmethod
    def parse(cls, label: str) -> "FeatureSpace":
        """The parts of a label; a label fastfid did not write (a user's name for their features) is
        all network."""
        network, marker, rest = label.rpartition(" resize=")
        if not marker:
            return cls(label)
        mode, _, where = rest.partition(" ")
        size = _SIZE.fullmatch(where)
        if not mode or (size is None and where != _NATIVE):
            return cls(label)
        return cls(network, mode, None if size is None else (int(size[1]), int(size[2])))

    @property
    def space(self) -> str | None:
        """The named representation space of the network (fastfid.models.space_names()), else None."""
        from fastfid.models.spaces import space_of

        return space_of(self.network)

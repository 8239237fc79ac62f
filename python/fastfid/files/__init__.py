"""fastfid's files, one job a module: ``format`` (the members and what they mean), ``archive``
(hostile-safe .npz reading), ``atomic`` (writes that are whole or absent, output locks), ``stats``
and ``spaces`` (statistics files as plain arrays), ``arrays`` (.npy features and images).

Statistics are read and written through :class:`fastfid.FeatureStats` (``save``, ``load``) and
:class:`fastfid.SpaceStats`; this package never imports them.
"""

from fastfid.files.format import PartialStatisticsError

__all__ = ["PartialStatisticsError"]

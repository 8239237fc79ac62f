"""The members of fastfid's statistics files, and what their presence means.

fastfid's exact state (count, mean, packed upper co-moment, format version) is stored beside
pytorch-fid's ``mu`` and ``sigma``, so that the peers read the file too. Partial statistics (a
checkpoint of an unfinished job) carry no ``mu``/``sigma``, so that no peer can mistake them for
final ones: their mean is ``fastfid_partial_mean``.
"""

from __future__ import annotations

import json

FORMAT_VERSION = 1

COUNT, COMOMENT, FORMAT = "fastfid_count", "fastfid_comoment_upper", "fastfid_format"
PARTIAL_MEAN = "fastfid_partial_mean"
# What the features are (FeatureStats.feature_space), and the progress record of a resumable job (JSON).
FEATURE_SPACE, PROGRESS = "fastfid_feature_space", "fastfid_progress"
# Statistics of several representation spaces in one file: the names (and valFDs) as JSON, and each
# space's statistics file, whole, as a byte array member "space<i>".
SPACES = "fastfid_spaces"
METADATA = (FEATURE_SPACE, PROGRESS, SPACES)
"""Members that hold text (a 0-d unicode array), not numbers."""
MOST_METADATA_CHARS = 1 << 16
"""The longest text a metadata member of an upload may declare: far more than any feature space or
list of spaces fastfid writes (uploads hold finished statistics, so no progress record)."""


def spaces_record(text: str) -> tuple[list[str], dict[str, float]]:
    """The names (distinct strings) and valFDs of a file of several spaces, from its SPACES member's
    JSON; ValueError (or KeyError, TypeError) when it is not such a record."""
    record = json.loads(text)
    names = list(record["spaces"])
    valfd = {str(k): float(v) for k, v in record["validation_fd"].items()}
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"the names {names!r} are not distinct strings")
    return names, valfd


def space_member(index: int) -> str:
    return f"space{index}"


class PartialStatisticsError(ValueError):
    """A statistics file holds an unfinished job's checkpoint where final statistics are needed."""


def done_text(progress: dict) -> str:
    """How far a saved job got, as messages say it: "400 of 1000 items done"."""
    try:
        return f"{progress['next'] - progress['start']} of {progress['stop'] - progress['start']} items done"
    except (KeyError, TypeError):
        return "not complete"

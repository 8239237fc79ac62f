"""fastfid's version, as installed (pyproject.toml is the one place it is set)."""

from importlib.metadata import version as _installed

__version__ = _installed("fastfid")

"""Wording shared by messages: counts with their noun, and long lists cut short."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``counted(1, "file")`` → "1 file"; ``counted(2, "file")`` → "2 files"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def first_items(items: list[str], shown: int = 10) -> str:
    """The first ``shown`` items, then how many more (the full list goes where there is room, e.g. --json)."""
    text = "; ".join(items[:shown])
    return text if len(items) <= shown else f"{text}; and {len(items) - shown} more"


def size_text(count: int) -> str:
    """A byte count as messages say it: "51,200 bytes", or "512 MiB" from a MiB on."""
    return f"{count:,} bytes" if count < 1 << 20 else f"{count / 2**20:,.0f} MiB"

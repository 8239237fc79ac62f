"""A job's checkpoint: its statistics saved with a progress record (what was read, of which source,
how far), so that an interrupted job continues where it stopped and a resumed one proves that what
it already read did not change."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastfid.extraction.sources import Source

FINGERPRINTS = ("stat", "content")


@dataclass
class Progress:
    next: int
    bad: list[str] = field(default_factory=list)  # "name: why" of each unreadable image left out

    @property
    def skipped(self) -> int:
        return len(self.bad)


class Checkpoint:
    """The progress record of one source's range, saved at ``path`` with the statistics. ``record``
    says what the run is (source, listing, shard, feature space, fingerprint mode); ``processed``
    chains what the items read so far held (sizes and times, or hashes), so that a resume checks
    that none of them changed while the items still to read may (a repaired file)."""

    def __init__(self, path, source: Source, *, total: int, start: int, stop: int, shard, feature_space: str | None,
                 fingerprint: str, unit: str):
        if fingerprint not in FINGERPRINTS:
            raise ValueError(f"fingerprint must be 'stat' (names, sizes, times) or 'content' (hashes), "
                             f"got {fingerprint!r}")
        self.path = Path(path)
        self.source, self.start, self.stop, self.unit = source, start, stop, unit
        self.content = fingerprint == "content"
        self.record = {"source": source.description, "listing": source.fingerprint(content=self.content),
                       "items": total, "shard": list(shard) if shard else None, "feature_space": feature_space,
                       "fingerprint": fingerprint}
        self.processed = hashlib.sha256()

    def note_processed(self, first: int, stop: int) -> None:
        if self.source.checks_items:
            for index in range(first, stop):
                self.processed.update(self.source.item_identity(index, self.content).encode() + b"\n")

    def begin(self, resume: bool, overwrite: bool) -> tuple[dict | None, Progress]:
        """(the saved record to continue from, or None to start afresh; the progress to start at), after
        checking that a saved run may be continued (or, without ``resume``, that none is left unasked)."""
        from fastfid.files.stats import read_progress

        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the saved run, or discard it")
        if not self.path.exists() or overwrite:
            return None, Progress(self.start)
        saved = read_progress(self.path)
        if not resume:
            if saved is not None and not saved.get("complete"):
                raise ValueError(f"{self.path} holds a partial run ({self.done(saved)}): continue it with "
                                 "--resume / resume=True, or start afresh with --overwrite / overwrite=True")
            return None, Progress(self.start)
        if saved is None:
            raise ValueError(f"{self.path} has no progress record: it was not written by a resumable job")
        afresh = f"start afresh with --overwrite / overwrite=True (discards the {self.done(saved)})"
        for key, value in self.record.items():
            if key == "listing" and saved.get(key) != value:
                raise ValueError(f"cannot resume from {self.path}: {self.source.description} changed since it "
                                 f"was saved (other files, or other contents); {afresh}")
            if saved.get(key) != value:
                raise ValueError(f"cannot resume from {self.path}: its {key} is {saved.get(key)!r}, "
                                 f"this run's is {value!r}")
        self.note_processed(int(saved["start"]), int(saved["next"]))
        if saved.get("processed") != self.processed.hexdigest():
            what = "contents" if self.content else "sizes or modification times"
            raise ValueError(f"cannot resume from {self.path}: files of {self.source.description} already "
                             f"processed changed since it was saved (their {what} differ); {afresh}")
        return saved, Progress(int(saved["next"]), list(saved.get("skipped_items", [])))

    def done(self, saved: dict | None = None, progress: Progress | None = None) -> str:
        """How far this job (or a saved one) got: "400 of 1000 rows done"."""
        first, next_item, stop = (int(saved["start"]), int(saved["next"]), int(saved["stop"])) if saved is not None \
            else (self.start, progress.next if progress else self.start, self.stop)
        return f"{next_item - first} of {stop - first} {self.unit} done"

    def save(self, stats: Any, progress: Progress) -> None:
        """The statistics (FeatureStats or SpaceStats) with the progress record, atomically."""
        stats.save(self.path, progress={
            **self.record, "start": self.start, "stop": self.stop, "next": progress.next,
            "skipped": progress.skipped, "skipped_items": progress.bad, "complete": progress.next >= self.stop,
            "processed": self.processed.hexdigest()})

    def failure_note(self, progress: Progress) -> str:
        """What a failed job kept, and the command that goes on."""
        advice = ("repair the item and rerun the same command with --resume / resume=True"
                  if self.source.checks_items else
                  f"--resume / resume=True continues while {self.source.description} is unchanged; once it is "
                  "changed, --overwrite / overwrite=True starts afresh")
        return f"{self.done(progress=progress)} are saved in {self.path}: {advice}"

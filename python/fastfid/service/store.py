"""The service's store: a database of records (SQLite in WAL mode by default, PostgreSQL by URL)
and content-addressed statistics files (a folder beside the SQLite file; a table of the database
when several hosts share a PostgreSQL server, so that no shared file system is needed).

Durability: a statistics file is written and fsynced (fastfid.files' atomic save) before the
record that names it is committed, and SQLite runs with ``synchronous=FULL``, so what was acknowledged survives a kill
of the process. Records are only ever added (a reference name gains versions; nothing is
overwritten), except canaries' last-run fields and alerts' delivery fields.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.exc import IntegrityError

from fastfid.files.atomic import remove_abandoned_temporaries
from fastfid.stats import FeatureStats

_metadata = sa.MetaData()

references = sa.Table(
    "references", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state_sha256", sa.String(64), nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=False),
    sa.Column("feature_space", sa.Text, nullable=False),
    sa.Column("count", sa.BigInteger),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("fastfid_version", sa.String(40), nullable=False),
    sa.Column("uploader", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.UniqueConstraint("name", "version"),
)

evaluations = sa.Table(
    "evaluations", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(200), unique=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("checkpoint", sa.String(200), nullable=False),
    sa.Column("train_seed", sa.BigInteger),
    sa.Column("sample_seed", sa.BigInteger),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("reference_version", sa.Integer, nullable=False),
    sa.Column("reference_sha256", sa.String(64), nullable=False),
    sa.Column("feature_space", sa.Text, nullable=False),
    sa.Column("fid", sa.Float, nullable=False),
    sa.Column("standard_error", sa.Float),
    sa.Column("interval_low", sa.Float),
    sa.Column("interval_high", sa.Float),
    sa.Column("groups", sa.Integer),
    sa.Column("count", sa.BigInteger),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("input_kind", sa.String(20), nullable=False),
    sa.Column("inputs_sha256", sa.Text, nullable=False),
    sa.Column("verdict", sa.Text),
    sa.Column("fastfid_version", sa.String(40), nullable=False),
    sa.Column("submitter", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    # A checkpoint's panel, and the model's latest evaluation (newest first): both read by every post.
    sa.Index("evaluations_by_checkpoint", "model", "reference", "checkpoint", "id"),
    sa.Index("evaluations_by_time", "model", "reference", "id"),
)

canaries = sa.Table(
    "canaries", _metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("reference", sa.String(200), nullable=False),
    sa.Column("reference_sha256", sa.String(64), nullable=False),
    sa.Column("stats_sha256", sa.String(64), nullable=False),
    sa.Column("stats_file_sha256", sa.String(64), nullable=False),
    sa.Column("low", sa.Float, nullable=False),
    sa.Column("high", sa.Float, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("last_run", sa.Float),
    sa.Column("last_fid", sa.Float),
    sa.Column("last_status", sa.String(40)),
    # Who set it: its statistics count toward that token's quota (added to stores made before it).
    sa.Column("uploader", sa.String(200)),
)

alerts = sa.Table(
    "alerts", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("canary", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("webhook_attempts", sa.Integer, nullable=False, default=0),
    sa.Column("webhook_delivered", sa.Boolean, nullable=False, default=False),
    sa.Column("webhook_error", sa.Text),
)

tokens = sa.Table(
    "tokens", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(10), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)

schedule = sa.Table(
    "schedule", _metadata,
    sa.Column("task", sa.String(40), primary_key=True),
    sa.Column("next_run", sa.Float, nullable=False),
)

blobs = sa.Table(  # statistics files, when the database is shared (PostgreSQL)
    "blobs", _metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# Each includes those before it: read; evaluate (post evaluations); admin (references, canaries).
SCOPES = ("read", "evaluate", "admin")


class NotFound(LookupError):
    """A named record that the store does not hold."""


class QuotaExceeded(Exception):
    """Storing statistics would pass a token's quota."""

    def __init__(self, uploader: str, stored: int, adding: int, quota: float):
        super().__init__(uploader, stored, adding, quota)
        self.uploader, self.stored, self.adding, self.quota = uploader, stored, adding, quota


class CorruptFile(OSError):
    """A stored statistics file whose bytes no longer match the hash recorded for them."""


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def database_url(store: Path, url: str | None) -> str:
    """The SQLAlchemy URL: the embedded SQLite file under ``store``, or ``url`` with psycopg as
    PostgreSQL's driver."""
    if url is None:
        return f"sqlite:///{store / 'fastfid.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Store:
    """Records and statistics files. ``directory`` holds the SQLite file and the statistics folder
    (and temporary files); with ``url`` (PostgreSQL) the records and files live in that database."""

    def __init__(self, directory: str | os.PathLike, url: str | None = None, *, verify_every: float = 300.0):
        # Only the service's own user reads the store: folders 0700, files 0600.
        self.directory = _private_folder(Path(directory))
        self.url = database_url(self.directory, url)
        self.embedded = self.url.startswith("sqlite")
        if self.embedded:
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        self.files = _private_folder(self.directory / "statistics")
        # Files found intact: signature (name, hash, size and time) → when. A file whose size and time
        # stay the same can still change (a flipped bit on disk, an UPDATE of a blob): each is hashed
        # again after verify_every seconds.
        self._verified: dict[tuple, float] = {}
        self.verify_every = verify_every
        remove_abandoned_temporaries(self.files)  # writes that a kill -9 cut short
        try:
            _metadata.create_all(self.engine, checkfirst=True)
        except sa.exc.DBAPIError:  # another process created a table between the check and the create
            _metadata.create_all(self.engine, checkfirst=True)
        self._add_missing_columns()
        if self.embedded:  # SQLite gives its -wal and -shm files the database's mode
            with contextlib.suppress(OSError):
                os.chmod(self.directory / "fastfid.db", 0o600)

    def _add_missing_columns(self) -> None:
        """Columns added since a store was made (nullable, so that old rows read as before)."""
        present = {column["name"] for column in sa.inspect(self.engine).get_columns("canaries")}
        if "uploader" not in present:
            with contextlib.suppress(sa.exc.DBAPIError):  # another process added it meanwhile
                with self.engine.begin() as connection:
                    connection.execute(sa.text("ALTER TABLE canaries ADD COLUMN uploader VARCHAR(200)"))

    def close(self) -> None:
        self.engine.dispose()

    def readiness_problems(self) -> list[str]:
        """What would make requests fail: a database that does not answer or is damaged (SQLite's
        quick_check), and current references whose statistics are missing or no longer hash as
        recorded. A file is hashed again when its size or modification time changed, and in any case
        every ``verify_every`` seconds (reads hash what they read every time)."""
        try:
            with self.engine.connect() as connection:
                if self.embedded:
                    verdict = connection.execute(sa.text("PRAGMA quick_check")).scalar()
                    if verdict != "ok":
                        raise sa.exc.DatabaseError("PRAGMA quick_check", None, Exception(str(verdict)))
                current = self.current_references()
        except sa.exc.SQLAlchemyError as error:
            logging.getLogger("fastfid.service").error("readiness: database", extra={"fields": {"error": str(error)}})
            return ["the database does not answer correctly (the server's log has the details)"]
        problems = []
        for reference in current:
            try:
                self._verify_cached(reference["state_sha256"], reference["file_sha256"])
            except (OSError, sa.exc.SQLAlchemyError) as error:
                problems.append(f"reference {reference['name']!r} version {reference['version']}: "
                                f"{error if isinstance(error, CorruptFile) else 'its statistics cannot be read'}")
        return problems

    def _verify_cached(self, state: str, expected_file_sha256: str) -> None:
        signature: tuple = (state, expected_file_sha256)  # a blob in PostgreSQL changes only through the store
        if self.embedded:
            info = (self.files / f"{state}.npz").stat()
            signature += (info.st_size, info.st_mtime_ns)
        checked = self._verified.get(signature)
        if checked is None or time.monotonic() - checked >= self.verify_every:
            self._verified.pop(signature, None)
            self.verified_bytes(state, expected_file_sha256)
            self._verified[signature] = time.monotonic()

    # --- statistics files ---------------------------------------------------------------------------
    def put_stats(self, stats: FeatureStats) -> tuple[str, str]:
        """Store statistics under the SHA-256 of their exact state; returns (state hash, file hash).
        A stored file of the same state is kept (its hash is the one older records hold), unless it
        no longer reads as that state, when it is written anew."""
        state = stats.state_sha256()
        with contextlib.suppress(OSError, ValueError):
            stored = self._stored_bytes(state)
            if FeatureStats.load(io.BytesIO(stored)).state_sha256() == state:
                return state, file_sha256(stored)
        if self.embedded:
            target = self.files / f"{state}.npz"
            stats.save(target)  # atomic and fsynced, as every statistics file fastfid writes
            os.chmod(target, 0o600)  # in a 0700 folder: private from the start
            return state, file_sha256(target.read_bytes())
        data = _npz_bytes(stats)
        statement = postgresql_insert(blobs).values(sha256=state, data=data)
        with self.engine.begin() as connection:
            connection.execute(statement.on_conflict_do_update(index_elements=[blobs.c.sha256],
                                                               set_={"data": statement.excluded.data}))
        return state, file_sha256(data)

    def _stored_bytes(self, state: str) -> bytes:
        if self.embedded:
            path = self.files / f"{state}.npz"
            try:
                return path.read_bytes()
            except FileNotFoundError as error:
                raise CorruptFile(f"the statistics file {path.name} is missing from the store") from error
        with self.engine.connect() as connection:
            data = connection.execute(sa.select(blobs.c.data).where(blobs.c.sha256 == state)).scalar()
        if data is None:
            raise CorruptFile(f"the statistics {state} are missing from the store")
        return bytes(data)

    def load_stats(self, state: str, expected_file_sha256: str) -> FeatureStats:
        """Stored statistics, after checking that their bytes still hash as recorded."""
        return FeatureStats.load(io.BytesIO(self.verified_bytes(state, expected_file_sha256)))

    def verified_bytes(self, state: str, expected_file_sha256: str) -> bytes:
        """A stored file's bytes; CorruptFile if they no longer hash as recorded."""
        data = self._stored_bytes(state)
        actual = file_sha256(data)
        if actual != expected_file_sha256:
            raise CorruptFile(f"the stored statistics file {state[:12]}… has SHA-256 {actual[:12]}…, but "
                              f"{expected_file_sha256[:12]}… was recorded when it was stored: it changed")
        return data

    # --- references ---------------------------------------------------------------------------------
    def add_reference(self, name: str, stats: FeatureStats, *, feature_space: str, uploader: str,
                      fastfid_version: str, quota: float | None = None) -> tuple[dict, bool]:
        """A new version of ``name`` (or the current one, unchanged, when it holds the same state);
        returns (record, created). See add_references for ``quota``."""
        return self.add_references([(name, stats, feature_space)], uploader=uploader, fastfid_version=fastfid_version,
                                   quota=quota)[0]

    def add_references(self, entries: list[tuple[str, FeatureStats, str]], *, uploader: str, fastfid_version: str,
                       quota: float | None = None) -> list[tuple[dict, bool]]:
        """New versions of several references (name, statistics, feature space), in one transaction: all
        or none. With ``quota`` (bytes), the uploader's stored statistics and the new ones must fit it:
        checked and written under one lock per uploader (SQLite's write lock, a PostgreSQL advisory
        lock), so that concurrent uploads cannot pass it together; QuotaExceeded otherwise."""
        files = [self.put_stats(stats) for _, stats, _ in entries]
        for _ in range(20):  # two uploads racing for the same version number: the loser retries
            try:
                with self._locked(uploader) as connection:
                    if quota is not None:
                        new = {state: state_bytes(stats.dim) for (_, stats, _), (state, _) in zip(entries, files)}
                        self._check_quota(connection, uploader, new, quota)
                    out = [self._add_version(connection, name, stats, space, state, file_hash, uploader,
                                             fastfid_version)
                           for (name, stats, space), (state, file_hash) in zip(entries, files)]
                return [(self.reference(record["name"], record["version"]), created) for record, created in out]
            except IntegrityError:
                continue
        raise RuntimeError(f"could not add versions of {[name for name, _, _ in entries]}: too many concurrent uploads")

    def _add_version(self, connection, name: str, stats: FeatureStats, feature_space: str, state: str,
                     file_hash: str, uploader: str, fastfid_version: str) -> tuple[dict, bool]:
        current = connection.execute(sa.select(references).where(references.c.name == name)
                                     .order_by(references.c.version.desc()).limit(1)).mappings().first()
        if current is not None and current["state_sha256"] == state and current["feature_space"] == feature_space:
            return dict(current), False
        version = 1 if current is None else int(current["version"]) + 1
        record = dict(name=name, version=version, state_sha256=state, file_sha256=file_hash,
                      feature_space=feature_space, count=stats.count, dim=stats.dim,
                      fastfid_version=fastfid_version, uploader=uploader, created=time.time())
        connection.execute(references.insert().values(**record))
        return record, True

    @contextlib.contextmanager
    def _locked(self, uploader: str):
        """A transaction that holds the uploader's quota lock until it ends."""
        with self.engine.connect() as connection:
            if self.embedded:
                connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's write lock, from the first statement on
            else:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:who))"), {"who": uploader})
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    def _check_quota(self, connection, uploader: str, new: dict[str, int], quota: float) -> None:
        stored = self._stored_states(connection, uploader)
        adding = sum(size for state, size in new.items() if state not in stored)
        total = sum(stored.values())
        if total + adding > quota:
            raise QuotaExceeded(uploader, total, adding, quota)

    def _stored_states(self, connection, uploader: str) -> dict[str, int]:
        """state hash → bytes of the statistics a token stored: its references' and its canaries'."""
        referenced = sa.select(references.c.state_sha256, references.c.dim).where(references.c.uploader == uploader)
        # A canary's statistics have its reference's dim (checked when it is set).
        canaried = sa.select(canaries.c.stats_sha256, references.c.dim).join(
            references, references.c.state_sha256 == canaries.c.reference_sha256).where(canaries.c.uploader == uploader)
        return {state: state_bytes(int(dim)) for query in (referenced, canaried)
                for state, dim in connection.execute(query)}

    def stored_bytes_of(self, uploader: str) -> int:
        """The bytes of the distinct statistics a token stored (references and canaries): 8·(d² + d + 1)
        each, the exact state's size (count, mean, co-moment)."""
        with self.engine.connect() as connection:
            return sum(self._stored_states(connection, uploader).values())

    def reference(self, name: str, version: int | None = None) -> dict:
        """The current (highest) version of a reference name, or the given version."""
        row = self._latest_reference(name) if version is None else self._one(
            sa.select(references).where(references.c.name == name).where(references.c.version == version))
        if row is None:
            what = f"version {version} of reference {name!r}" if version is not None else f"reference {name!r}"
            raise NotFound(f"no {what}; upload it with PUT /references/{name}")
        return row

    def _latest_reference(self, name: str) -> dict | None:
        return self._one(sa.select(references).where(references.c.name == name)
                         .order_by(references.c.version.desc()).limit(1))

    def reference_versions(self, name: str) -> list[dict]:
        rows = self._all(sa.select(references).where(references.c.name == name).order_by(references.c.version))
        if not rows:
            raise NotFound(f"no reference {name!r}")
        return rows

    def current_references(self) -> list[dict]:
        latest = sa.select(references.c.name, sa.func.max(references.c.version).label("version")) \
            .group_by(references.c.name).subquery()
        query = sa.select(references).join(latest, sa.and_(references.c.name == latest.c.name,
                                                            references.c.version == latest.c.version))
        return self._all(query.order_by(references.c.name))

    # --- evaluations --------------------------------------------------------------------------------
    def add_evaluation(self, record: dict) -> tuple[dict, bool]:
        """Insert an evaluation; with an idempotency key already stored, the stored one instead (a
        retried post). Returns (record, created)."""
        return self.add_evaluations([record])[0]

    def add_evaluations(self, records: list[dict]) -> list[tuple[dict, bool]]:
        """Insert evaluations in one transaction: all of them, or none. When an idempotency key is
        already stored (a concurrent retry won), the stored records instead, if every record's key is
        found; (record, created) each."""
        rows = [dict(record, verdict=json.dumps(record.get("verdict")),
                     inputs_sha256=json.dumps(record["inputs_sha256"])) for record in records]
        try:
            with self.engine.begin() as connection:
                for row in rows:
                    key = connection.execute(evaluations.insert().values(**row)).inserted_primary_key
                    assert key is not None
                    row["id"] = int(key[0])
        except IntegrityError:
            keys = [row.get("idempotency_key") for row in rows]
            stored = [None if key is None else self.find_evaluation(key) for key in keys]
            if any(found is None for found in stored):
                raise
            return [(found, False) for found in stored if found is not None]
        return [(_evaluation(row), True) for row in rows]

    def find_evaluation(self, key: str) -> dict | None:
        row = self._one(sa.select(evaluations).where(evaluations.c.idempotency_key == key))
        return None if row is None else _evaluation(row)

    def evaluation(self, evaluation_id: int) -> dict:
        row = self._one(sa.select(evaluations).where(evaluations.c.id == evaluation_id))
        if row is None:
            raise NotFound(f"no evaluation {evaluation_id}")
        return _evaluation(row)

    def evaluations(self, *, model: str | None = None, reference: str | None = None, checkpoint: str | None = None,
                    after: int | None = None, limit: int | None = None) -> list[dict]:
        """Evaluations matching the filters, oldest first; ``after`` an id: those after it (a page's cursor)."""
        query = _filtered(sa.select(evaluations), model, reference, checkpoint)
        if after is not None:
            query = query.where(evaluations.c.id > after)
        query = query.order_by(evaluations.c.id)
        if limit is not None:
            query = query.limit(limit)
        return [_evaluation(row) for row in self._all(query)]

    def stream_history(self, model: str, reference: str) -> Iterator[dict]:
        """The columns a history needs of a model's evaluations on a reference, oldest first, read in
        batches from the database (memory stays flat however many there are)."""
        columns = (evaluations.c.id, evaluations.c.checkpoint, evaluations.c.fid, evaluations.c.created,
                   evaluations.c.interval_low, evaluations.c.interval_high)
        query = _filtered(sa.select(*columns), model, reference, None).order_by(evaluations.c.id)
        with self.engine.connect() as connection:
            for row in connection.execution_options(yield_per=2000).execute(query).mappings():
                yield dict(row)

    def model_references(self, model: str) -> list[str]:
        """The references a model was evaluated against."""
        query = sa.select(evaluations.c.reference).where(evaluations.c.model == model).distinct() \
            .order_by(evaluations.c.reference)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def model_summaries(self) -> list[dict]:
        """Per model and reference: how many checkpoints and evaluations, and the latest time."""
        query = sa.select(evaluations.c.model, evaluations.c.reference,
                          sa.func.count(sa.distinct(evaluations.c.checkpoint)).label("checkpoints"),
                          sa.func.count().label("evaluations"),
                          sa.func.max(evaluations.c.created).label("last_evaluated")) \
            .group_by(evaluations.c.model, evaluations.c.reference) \
            .order_by(evaluations.c.model, evaluations.c.reference)
        return self._all(query)

    def latest_checkpoint(self, model: str, reference: str, *, other_than: str | None = None) -> str | None:
        """The checkpoint of the model's latest evaluation on ``reference`` (other than ``other_than``)."""
        query = sa.select(evaluations.c.checkpoint).where(evaluations.c.model == model) \
            .where(evaluations.c.reference == reference)
        if other_than is not None:
            query = query.where(evaluations.c.checkpoint != other_than)
        with self.engine.connect() as connection:
            return connection.execute(query.order_by(evaluations.c.id.desc()).limit(1)).scalar()

    def seed_panel(self, model: str, reference: str, checkpoint: str) -> dict[int, tuple[float, int]]:
        """A checkpoint's evaluations by training seed: (sum of their FIDs, how many)."""
        query = sa.select(evaluations.c.train_seed, sa.func.sum(evaluations.c.fid), sa.func.count()) \
            .where(evaluations.c.model == model).where(evaluations.c.reference == reference) \
            .where(evaluations.c.checkpoint == checkpoint).where(evaluations.c.train_seed.is_not(None)) \
            .group_by(evaluations.c.train_seed)
        with self.engine.connect() as connection:
            return {int(seed): (float(total), int(count)) for seed, total, count in connection.execute(query)}

    def latest_evaluation(self, model: str, reference: str, checkpoint: str) -> dict | None:
        """fid and standard_error of a checkpoint's newest evaluation."""
        query = sa.select(evaluations.c.fid, evaluations.c.standard_error).where(evaluations.c.model == model) \
            .where(evaluations.c.reference == reference).where(evaluations.c.checkpoint == checkpoint) \
            .order_by(evaluations.c.id.desc()).limit(1)
        return self._one(query)

    def count_evaluations(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(evaluations)).scalar() or 0)

    # --- canaries and alerts ------------------------------------------------------------------------
    def put_canary(self, record: dict, *, quota: float | None = None, size: int = 0) -> dict:
        """Set a canary (replacing one of the same name); with ``quota``, its statistics (``size``
        bytes) count toward its uploader's, checked under the uploader's lock as add_references does."""
        with self._locked(record.get("uploader") or "") as connection:
            if quota is not None:
                self._check_quota(connection, record["uploader"], {record["stats_sha256"]: size}, quota)
            connection.execute(canaries.delete().where(canaries.c.name == record["name"]))
            connection.execute(canaries.insert().values(**record))
        return self.canary(record["name"])

    def canary(self, name: str) -> dict:
        row = self._one(sa.select(canaries).where(canaries.c.name == name))
        if row is None:
            raise NotFound(f"no canary {name!r}; create it with PUT /canaries/{name}")
        return row

    def all_canaries(self) -> list[dict]:
        return self._all(sa.select(canaries).order_by(canaries.c.name))

    def record_canary_run(self, name: str, fid: float | None, status: str, previous: str | None) -> bool:
        """Record a run's outcome if the canary's last status is still ``previous``; False when another
        run recorded one first (the caller reads the canary again and retries): an atomic claim, so
        that concurrent runs raise each alert once."""
        with self.engine.begin() as connection:
            updated = connection.execute(
                canaries.update().where(canaries.c.name == name)
                .where(canaries.c.last_status.is_not_distinct_from(previous))
                .values(last_run=time.time(), last_fid=fid, last_status=status))
        return updated.rowcount == 1

    def add_alert(self, canary: str, kind: str, message: str) -> dict:
        return self.alert(self._insert(alerts, dict(canary=canary, kind=kind, message=message, created=time.time(),
                                                    webhook_attempts=0, webhook_delivered=False)))

    def alert(self, alert_id: int) -> dict:
        row = self._one(sa.select(alerts).where(alerts.c.id == alert_id))
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        return row

    def record_delivery(self, alert_id: int, attempts: int, delivered: bool, error: str | None) -> None:
        with self.engine.begin() as connection:
            connection.execute(alerts.update().where(alerts.c.id == alert_id).values(
                webhook_attempts=attempts, webhook_delivered=delivered, webhook_error=error))

    def all_alerts(self, canary: str | None = None) -> list[dict]:
        query = sa.select(alerts)
        if canary is not None:
            query = query.where(alerts.c.canary == canary)
        return self._all(query.order_by(alerts.c.id))

    def alert_counts(self) -> dict[tuple[str, str], int]:
        query = sa.select(alerts.c.canary, alerts.c.kind, sa.func.count()).group_by(alerts.c.canary, alerts.c.kind)
        with self.engine.connect() as connection:
            return {(canary, kind): int(n) for canary, kind, n in connection.execute(query)}

    def claim(self, task: str, every: float) -> bool:
        """True for the one process (of all workers and hosts) that should run ``task`` now; it
        then is not due again for ``every`` seconds."""
        now = time.time()
        with self.engine.begin() as connection:
            with contextlib.suppress(IntegrityError):
                with connection.begin_nested():
                    connection.execute(schedule.insert().values(task=task, next_run=now + every))
                    return True
            updated = connection.execute(schedule.update().where(schedule.c.task == task)
                                         .where(schedule.c.next_run <= now).values(next_run=now + every))
            return updated.rowcount == 1

    # --- tokens -------------------------------------------------------------------------------------
    def add_token(self, name: str, scope: str, token: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        with self.engine.begin() as connection:
            connection.execute(tokens.insert().values(name=name, scope=scope, token_sha256=token_hash(token),
                                                      created=time.time()))

    def revoke_tokens(self, name: str) -> int:
        """Remove every token of ``name``; how many there were."""
        with self.engine.begin() as connection:
            return int(connection.execute(tokens.delete().where(tokens.c.name == name)).rowcount)

    def token_names(self) -> list[dict]:
        """name, scope and creation time of every token (never the tokens: only their hashes are kept)."""
        return self._all(sa.select(tokens.c.name, tokens.c.scope, tokens.c.created).order_by(tokens.c.id))

    def token(self, token: str) -> dict | None:
        return self._one(sa.select(tokens).where(tokens.c.token_sha256 == token_hash(token)))

    # --- helpers ------------------------------------------------------------------------------------
    def _insert(self, table: sa.Table, values: dict) -> int:
        """Insert one row in its own transaction; its new id."""
        with self.engine.begin() as connection:
            key = connection.execute(table.insert().values(**values)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def _one(self, query) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else dict(row)

    def _all(self, query) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]


def state_bytes(dim: int) -> int:
    return 8 * (dim * dim + dim + 1)


def _filtered(query, model: str | None, reference: str | None, checkpoint: str | None):
    for column, value in ((evaluations.c.model, model), (evaluations.c.reference, reference),
                          (evaluations.c.checkpoint, checkpoint)):
        if value is not None:
            query = query.where(column == value)
    return query


def _private_folder(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # a folder made earlier, or under another umask
    return folder


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe, behind a prefix so that it never starts with
    "-" (``--token -x…`` reads as an option on a command line) and is recognisable in a leaked log."""
    return "fastfid_" + secrets.token_urlsafe(32)


def _evaluation(row: dict) -> dict:
    row = dict(row)
    row["verdict"] = json.loads(row["verdict"]) if row.get("verdict") else None
    key = row.get("idempotency_key")
    if key and _SCOPED_KEY.fullmatch(key):  # the client's own key, without its token's scope
        row["idempotency_key"] = key.partition(":")[2]
    row["inputs_sha256"] = json.loads(row["inputs_sha256"])
    return row


_SCOPED_KEY = re.compile(r"[0-9a-f]{16}:.*", re.S)


def _sqlite_pragmas(connection, _record) -> None:
    # WAL: readers never block the writer; FULL: a commit is on disk when it returns.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _npz_bytes(stats: FeatureStats) -> bytes:
    """fastfid's statistics file (readable by the peers too), as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stats.npz"
        stats.save(path)
        return path.read_bytes()


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its float NaNs as null (JSON has no NaN)."""
    return {key: (None if isinstance(value, float) and value != value else value) for key, value in record.items()}

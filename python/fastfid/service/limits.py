"""What one request may cost: its body's size and pace, the requests per token per minute, the heavy
requests running at once, the work its uploads declare (refused from their headers, before any
array is read), and what a token may store."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Iterable

from fastfid._text import size_text
from fastfid.service.config import WORK_PER_UPLOADED_BYTE, ServiceConfig
from fastfid.service.errors import Refusal, send_refusal
from fastfid.service.store import QuotaExceeded, Store, state_bytes


class _TooLarge(Refusal):
    def __init__(self, limit_mb: float):
        super().__init__(413, f"upload too large: the limit is {limit_mb:g} MiB (fastfid serve --max-upload-mb)")


class _Stalled(Refusal):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body stalled: no bytes for {seconds:g} s (--body-timeout)")


class _TooSlow(Refusal):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body took more than {seconds:g} s in all (--body-deadline)")


BODY_REFUSALS = (_TooLarge, _Stalled, _TooSlow)


class UploadLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length before anything is read, or as
    the bytes arrive when it declares none; 408 when the body stops arriving for ``idle_seconds``,
    or has not arrived whole ``deadline_seconds`` after its first byte was asked for (a body that
    trickles just fast enough never to stall still ends)."""

    def __init__(self, app, limit_mb: float, idle_seconds: float = 30.0, deadline_seconds: float = 600.0):
        self.app, self.limit_mb, self.limit = app, limit_mb, int(limit_mb * 2**20)
        self.idle_seconds, self.deadline_seconds = idle_seconds, deadline_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await send_refusal(_TooLarge(self.limit_mb), scope, receive, send)
        received = 0
        started = False
        complete = False
        first: float | None = None

        async def counting_receive():
            nonlocal received, complete, first
            if complete:  # after the body, receive() waits for a disconnect: no deadline
                return await receive()
            now = time.monotonic()
            first = now if first is None else first
            left = self.deadline_seconds - (now - first)
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.idle_seconds, left)))
            except asyncio.TimeoutError:
                raise (_Stalled(self.idle_seconds) if left > self.idle_seconds else _TooSlow(self.deadline_seconds)) \
                    from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    raise _TooLarge(self.limit_mb)  # the app's handler answers 413
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BODY_REFUSALS as error:  # read outside a handler
            if not started:
                await send_refusal(error, scope, receive, send)


class RateLimit:
    """At most ``per_minute`` requests per token in any 60 s, in this process (0: no limit); beyond,
    429 with the seconds until the oldest of them leaves the window."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._recent: dict[str, collections.deque] = {}

    def count(self, name: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        recent = self._recent.setdefault(name, collections.deque())
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) >= self.per_minute:
            wait = max(1, math.ceil(60.0 - (now - recent[0])))
            raise Refusal(429, f"token {name!r} sent more than {self.per_minute} requests in a minute "
                               "(--max-requests-per-minute); retry later", {"retry-after": str(wait)})
        recent.append(now)


class BodyGate:
    """Request bodies being received at once: at most ``total`` in this process (beyond, 503) and
    ``per_token`` for one token (beyond, 429). A body is received before its request waits for a
    work slot, so a slow sender holds a place here, never a work slot."""

    def __init__(self, total: int, per_token: int):
        self.total, self.per_token = total, per_token
        self._receiving = 0
        self._by_token: collections.Counter[int | None] = collections.Counter()

    @contextlib.asynccontextmanager
    async def receiving(self, token: int | None, name: str):
        """A place for one body of the token ``token`` (its id; ``name`` for messages)."""
        if self._by_token[token] >= self.per_token:
            raise Refusal(429, f"token {name!r} is already sending {self.per_token} request bodies at once "
                               "(--max-bodies-per-token); retry when one is through", {"retry-after": "5"})
        if self._receiving >= self.total:
            raise Refusal(503, f"the server is receiving {self.total} request bodies already (--max-bodies); retry "
                               "later", {"retry-after": "5"})
        self._receiving += 1
        self._by_token[token] += 1
        try:
            yield
        finally:
            self._receiving -= 1
            self._by_token[token] -= 1
            if not self._by_token[token]:
                del self._by_token[token]


class WorkQueue:
    """Heavy requests (uploads, evaluations, canary runs) at most ``running`` at once in this
    process, and at most ``waiting`` more in line, their bodies already received (BodyGate);
    beyond that, 503 with Retry-After, which fastfid's client retries. Reads and /healthz never wait
    here."""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop
        self._in_line = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.running)
        if self._slots.locked() and self._in_line >= self.waiting:
            raise Refusal(503, f"the server is busy ({self.running} heavy requests running, {self._in_line} "
                               "waiting); retry later", {"retry-after": "5"})
        self._in_line += 1
        try:
            await self._slots.acquire()
        finally:
            self._in_line -= 1
        try:
            yield
        finally:
            self._slots.release()


def check_work(dims: Iterable[int], carried: int, config: ServiceConfig, *,
               replicates: Iterable[int] = ()) -> None:
    """Refuse, from the uploads' headers alone, a request whose work would not be bounded by what it
    carries: a dimension beyond --max-dim, exact states (state_bytes: 8·(d² + d + 1) bytes each, every
    space of every upload) of more than --max-state-mb held at once, or d × d work of more than
    WORK_PER_UPLOADED_BYTE times the ``carried`` bytes, counting each state once per FD it costs
    (``replicates``: the dims of the jackknife's extra FDs)."""
    dims, replicates = list(dims), list(replicates)
    if not dims:
        return  # the request's own checks say what is missing
    dim, state = max(dims), sum(state_bytes(d) for d in dims)
    work = state + sum(state_bytes(d) for d in replicates)
    if dim > config.max_dim:
        raise Refusal(413, f"dimension {dim} is beyond this server's limit of {config.max_dim} (--max-dim)")
    if state > config.max_state_mb * 2**20:
        raise Refusal(413, f"the uploads declare {size_text(state)} of d × d statistics, beyond this server's "
                           f"limit of {config.max_state_mb:g} MiB (--max-state-mb)")
    if work > WORK_PER_UPLOADED_BYTE * carried:
        extra = f", {len(replicates)} jackknife replicates included" if replicates else ""
        raise Refusal(413, f"the uploads ask for {size_text(work)} of d × d work (dim {dim}{extra}) in {carried:,} "
                           f"bytes: this server works at most {WORK_PER_UPLOADED_BYTE}× what a request carries; send "
                           "statistics (.npz) rather than so few feature rows")


def check_quota(store: Store, uploader: str, size: int, config: ServiceConfig) -> None:
    """413, before an upload is read, when storing ``size`` more bytes of statistics would pass the
    token's quota (the store checks it again, atomically, as it writes: Store.add_references)."""
    stored = store.stored_bytes_of(uploader)
    if stored + size > config.max_stored_mb * 2**20:
        raise QuotaExceeded(uploader, stored, size, config.max_stored_mb * 2**20)  # errors.py words it

"""Who may do what: bearer tokens (stored hashed, looked up on every request so that a revocation
holds at once everywhere) of the scopes read < evaluate < admin, and the browser's sign-in, a read
token kept in an HttpOnly, SameSite=Strict cookie that grants reading only."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fastfid.service import pages
from fastfid.service.errors import Refusal
from fastfid.service.limits import RateLimit
from fastfid.service.store import SCOPES, Store


@dataclass(frozen=True)
class Principal:
    """Who sent a request: its token's id (None for an anonymous read), name (recorded as uploader or
    submitter; several tokens may share one) and scope."""

    id: int | None
    name: str
    scope: str


ANONYMOUS = Principal(None, "anonymous", "read")


class Access:
    """Authorisation of requests against the store's tokens, each counted toward its rate limit."""

    def __init__(self, store: Store, rates: RateLimit, public_read: bool):
        self.store, self.rates, self.public_read = store, rates, public_read

    async def authorise(self, request: Request, scope: str, *, public: bool | None = None) -> Principal:
        """The request's token, or 401/403. Reads also take the sign-in cookie; writes never do.
        ``public``: whether a request without a token may pass (default: --public-read, for reads)."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if not token or kind.lower() != "bearer":
            cookie = request.cookies.get(pages.READ_COOKIE) if scope == "read" else None
            if cookie:
                record = await self.token(cookie)
                if record is not None:
                    self.rates.count(record["name"])
                    return _principal(record)
                raise Refusal(401, "this browser's sign-in is no longer valid (the token was revoked): sign in again")
            if (self.public_read and scope == "read") if public is None else public:
                return ANONYMOUS
            raise Refusal(401, f"missing token: this needs a token of scope {scope!r} or wider (fastfid submit and "
                               "the client: --token or $FASTFID_TOKEN; HTTP: 'Authorization: Bearer TOKEN'; an "
                               f"administrator creates one with: fastfid token create NAME --scope {scope})")
        record = await self.token(token.strip())
        if record is None:
            raise Refusal(401, "unknown token")
        self.rates.count(record["name"])
        if SCOPES.index(record["scope"]) < SCOPES.index(scope):
            raise Refusal(403, f"token {record['name']!r} has the {record['scope']} scope; this needs a token of the "
                               f"{scope} scope (fastfid token create NAME --scope {scope})")
        return _principal(record)

    async def page_reader(self, request: Request) -> Response | None:
        """None if the request may read; else the sign-in page (a browser cannot send a bearer header)."""
        try:
            await self.authorise(request, "read")
        except Refusal as refusal:
            if refusal.status != 401:
                raise
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            missing = refusal.message.startswith("missing token")
            return HTMLResponse(pages.sign_in(wanted, None if missing else refusal.message), status_code=401)
        return None

    async def token(self, token: str) -> dict | None:
        """A token's record, read from the store on every request (one indexed lookup)."""
        return await run_in_threadpool(self.store.token, token)

    async def sign_in(self, request: Request, form: dict[str, str]) -> Response:
        """A read token from the form becomes the read cookie; a token of a wider scope is refused, so
        that the browser never holds the right to write. A form posted from another site is refused
        (login CSRF: another site signing this browser in with the attacker's token), by the Origin
        and Sec-Fetch-Site headers browsers send."""
        origin, site = request.headers.get("origin"), request.headers.get("sec-fetch-site")
        # The host only: behind a TLS proxy the scheme this server sees may differ from the browser's.
        # "null" is what a browser sends under this service's no-referrer policy: Sec-Fetch-Site decides.
        foreign = origin not in (None, "null") and urlsplit(origin).netloc != request.url.netloc
        if foreign or site not in (None, "same-origin", "none"):
            raise Refusal(403, "sign-in forms are accepted from this service's own page only")
        token, wanted = form.get("token", "").strip(), form.get("next", "/")
        record = await self.token(token) if 0 < len(token) <= pages.MAX_TOKEN_CHARS else None
        problem = ("unknown token" if record is None else
                   f"token {record['name']!r} has the {record['scope']} scope: sign in with a read token, so that "
                   "this browser can read only" if record["scope"] != "read" else None)
        if problem:
            return HTMLResponse(pages.sign_in(wanted, problem), status_code=401)
        response = RedirectResponse(pages.safe_next(wanted), status_code=303)
        response.set_cookie(pages.READ_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response


def _principal(record: dict) -> Principal:
    return Principal(int(record["id"]), record["name"], record["scope"])


def sign_out() -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(pages.READ_COOKIE, path="/", httponly=True, samesite="strict")
    return response

"""The service's HTML pages for people: the index of models and references, the sign-in form, and
the frame the history page shares. Server-rendered, no script, no external resource.

A browser cannot send a bearer header, so reading is granted by a cookie that the sign-in form
sets from a read token: HttpOnly (no script reads it), SameSite=Strict (no other site's page
sends it), Secure over HTTPS. It grants reading only; writes take the bearer header alone, so a
forged cross-site request has nothing to ride on.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from urllib.parse import quote

READ_COOKIE = "fastfid_read"
MAX_TOKEN_CHARS = 200  # longer than any token `fastfid token create` makes


def document(title: str, body: str, *, signed_in: bool = False) -> str:
    sign_out = ('<form method="post" action="/signout" class="signout"><button>Sign out</button></form>'
                if signed_in else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; background: #fff; }}
table {{ border-collapse: collapse; margin-top: 16px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td.name, th.name {{ text-align: left; }}
.note {{ color: #444; font-size: 14px; max-width: 720px; }}
.error {{ color: #a00; }}
.signout {{ float: right; }}
nav {{ margin-bottom: 8px; }}
</style></head>
<body>{sign_out}<nav><a href="/">All models and references</a></nav>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def timestamp(when: float | str) -> str:
    """A stored time (seconds since the epoch, or ISO 8601) to the second, in UTC."""
    moment = datetime.fromisoformat(when) if isinstance(when, str) else datetime.fromtimestamp(when, timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def index(models: list[dict], references: list[dict], *, signed_in: bool = False) -> str:
    model_rows = "".join(
        f'<tr><td class="name"><a href="/models/{quote(m["model"], safe="")}?reference='
        f'{quote(m["reference"], safe="")}">{html.escape(m["model"])}</a></td>'
        f'<td class="name">{html.escape(m["reference"])}</td><td>{m["checkpoints"]}</td><td>{m["evaluations"]}</td>'
        f'<td>{timestamp(m["last_evaluated"])}</td></tr>' for m in models)
    reference_rows = "".join(
        f'<tr><td class="name">{html.escape(r["name"])}</td><td>{r["version"]}</td>'
        f'<td class="name">{html.escape(r["feature_space"])}</td><td>{"" if r["count"] is None else r["count"]}</td>'
        f'<td>{r["dim"]}</td><td>{timestamp(r["created"])}</td></tr>' for r in references)
    body = (
        "<h2>Models</h2>" + (
            '<table><tr><th class="name">model</th><th class="name">reference</th><th>checkpoints</th>'
            f"<th>evaluations</th><th>last evaluated</th></tr>{model_rows}</table>"
            if models else '<p class="note">No evaluations yet.</p>')
        + "<h2>References</h2>" + (
            '<table><tr><th class="name">name</th><th>version</th><th class="name">feature space</th>'
            f"<th>samples</th><th>dim</th><th>uploaded</th></tr>{reference_rows}</table>"
            if references else '<p class="note">No references yet.</p>'))
    return document("FID service", body, signed_in=signed_in)


def sign_in(next_path: str, message: str | None = None) -> str:
    error = f'<p class="error">{html.escape(message)}</p>' if message else ""
    body = f"""{error}<form method="post" action="/signin">
<input type="hidden" name="next" value="{html.escape(safe_next(next_path))}">
<p><label>Read token <input type="password" name="token" autocomplete="off" size="40"
   maxlength="{MAX_TOKEN_CHARS}" required></label> <button>Sign in</button></p>
</form>
<p class="note">Paste a token of the read scope (<code>fastfid token create NAME --scope read</code>).
This browser then keeps it in a cookie that no script can read and no other site can send, good
for reading pages and results only; evaluations and uploads still need the token in an
<code>Authorization: Bearer</code> header.</p>"""
    return document("Sign in to the FID service", body)


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a path on this server only (no other host, no scheme)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or any(
            ord(c) < 32 for c in path):
        return "/"
    return path

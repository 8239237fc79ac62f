"""FID as a service: golden references, evaluations with error bars and verdicts, canaries and
drift alerts, history pages, Prometheus metrics and bearer-token auth (``fastfid serve``).

Needs the ``service`` extra (Starlette, uvicorn, SQLAlchemy, python-multipart, prometheus_client;
psycopg for PostgreSQL). The numbers are fastfid's own: a stored reference is factorised once
(:class:`fastfid.Reference`) and every evaluation costs one FD, or one per jackknife replicate.
"""

try:
    import sqlalchemy  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as error:
    raise ImportError(f"fastfid's service needs its extra ({error.name} is missing): "
                      "pip install 'fastfid[service]'") from error

from fastfid.service.app import create_app  # noqa: E402
from fastfid.service.config import ServiceConfig  # noqa: E402
from fastfid.service.store import Store  # noqa: E402

__all__ = ["ServiceConfig", "Store", "create_app"]

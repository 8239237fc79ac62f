"""FID as a service: golden references, evaluations with error bars and verdicts, canaries and
drift alerts, history pages, Prometheus metrics and bearer-token auth (``fastfid serve``).

Needs the ``service`` extra (Starlette, uvicorn, SQLAlchemy, python-multipart, prometheus_client;
psycopg for PostgreSQL). The numbers are fastfid's own: a stored reference is factorised once
(:class:`fastfid.Reference`) and every evaluation costs one FD, or one per jackknife replicate.
"""

from fastfid.service.app import ServiceConfig, create_app
from fastfid.service.store import Store

__all__ = ["ServiceConfig", "Store", "create_app"]

"""Scratch databases for runs that must never touch your data (`hsepay bench`, `hsepay chaos`).

Each is dropped and created anew: next to the configured service databases (same server, same
credentials) when HSEPAY_PAYMENTS_DB and HSEPAY_ORDERS_DB are set, or else on the embedded
PostgreSQL of `embedded_home`, started if need be.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from hsepay import embedded, registry
from hsepay.config import Settings, normalise_db_url
from hsepay.db import conninfo

__all__ = ["scratch_databases"]


def scratch_databases(
    settings: Settings, names: Mapping[str, str], embedded_home: Path
) -> tuple[dict[str, str], Path | None]:
    """Fresh, empty databases: service name -> database name in, service name -> URL out.

    The second value is the embedded server's home when that server was used (None: the configured
    one). A partly configured setup (one URL set, the other not) uses the embedded server for both,
    so that a run never spreads over two servers. Raises psycopg.Error, EmbeddedError or OSError.
    """
    configured = {service: settings.db.url_of(registry.get(service).database.variable) for service in names}
    home = None
    if not all(configured.values()):
        home = embedded_home
        server = embedded.ensure_postgres(embedded_home)
        configured = dict.fromkeys(names, server)
    urls = {}
    for service, name in names.items():
        base = make_url(configured[service])
        maintenance = conninfo(base.set(database="postgres").render_as_string(hide_password=False))
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        urls[service] = normalise_db_url(base.set(database=name).render_as_string(hide_password=False), "scratch")
    return urls, home

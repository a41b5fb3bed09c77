"""Database plumbing shared by both services: engines, metadata conventions, common column types."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["create_engine", "new_metadata"]

# Stable constraint names, so Alembic's autogenerate and the migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(
    url: str, *, pool_size: int = 10, pool_timeout: float = 5.0, application_name: str = "hsepay"
) -> AsyncEngine:
    """An async engine on psycopg 3; `url` is already normalised by the config.

    The pool is bounded (`pool_size` plus as many overflow connections): a request that finds it
    exhausted waits `pool_timeout` seconds, then fails with a pool TimeoutError that the API answers
    503, rather than queueing for SQLAlchemy's default 30 s.
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        # No pre-ping: it costs a round trip per checkout on the hot path; a dropped connection
        # fails its statement instead, which every caller already retries or reports as 503.
        pool_pre_ping=False,
        connect_args={"application_name": application_name, "connect_timeout": 10},
    )

"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncEngine


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    include_in_schema = False

    @get("/live")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready")
    async def ready(self, engine: NamedDependency[AsyncEngine]) -> Response[dict[str, str]]:
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # any failure means "not ready", with the reason
            return Response({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
        return Response({"status": "ok", "database": "ok"})

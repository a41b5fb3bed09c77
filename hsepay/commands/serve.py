"""`hsepay serve`: one HTTP API in the foreground."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from hsepay.commands.common import run, runtime

DEFAULT_PORTS = {"payments": 8080, "orders": 8081}


class Api(StrEnum):
    payments = "payments"
    orders = "orders"


def serve(
    api: Annotated[Api, typer.Argument(help="Which API to serve.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default 8080 payments, 8081 orders).")
    ] = None,
    with_workers: Annotated[
        bool, typer.Option("--with-workers", help="Also run this service's outbox relay and inbox consumer.")
    ] = False,
) -> None:
    """Serve a service's REST API (OpenAPI at /schema, Swagger UI at /schema/swagger).

    Example: hsepay serve payments --port 8080
    """
    from hsepay.runner import serve_api

    service = api.value
    rt = runtime((service,))
    run(lambda: serve_api(rt, service, host=host, port=port or DEFAULT_PORTS[service], with_workers=with_workers))

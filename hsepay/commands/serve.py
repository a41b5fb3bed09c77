"""`hsepay serve`: one HTTP API in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from hsepay import registry
from hsepay.commands.common import built, execute, services, settings
from hsepay.commands.token import require_auth_choice


def serve(
    service: Annotated[str, typer.Argument(help=f"Which API to serve: {', '.join(registry.SERVICES)}.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port (default: " + ", ".join(f"{s.default_port} {s.name}" for s in registry.SERVICES.values()) + ").",
        ),
    ] = None,
    with_workers: Annotated[
        bool, typer.Option("--with-workers", help="Also run this service's outbox relay and inbox consumer.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="API worker processes (default HSEPAY_API_WORKERS, 1); two use both cores of a 2-core box.",
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Serve without authentication (local development, load tests): every caller may do everything.",
        ),
    ] = False,
) -> None:
    """Serve a service's REST API (OpenAPI at /schema, Swagger UI at /schema/swagger).

    Example: hsepay serve payments --port 8080
    """
    from hsepay.asgi import serve_api_processes
    from hsepay.roles import serve_api

    (spec,) = services(service, allowed=tuple(registry.SERVICES.values()), every=False)
    if spec.database is not None:  # the gateway verifies nothing itself: the APIs behind it do
        require_auth_choice(insecure_no_auth)
    port = port or spec.default_port
    processes = workers or settings().api.workers
    if with_workers:
        if processes > 1:
            raise typer.BadParameter("--with-workers runs in one process: leave --workers at 1", param_hint="--workers")

        async def serve_with_workers() -> None:
            async with built((spec,), wait=True, apps=True, relays=True, consumers=True) as system:
                await serve_api(system, spec.name, host=host, port=port)

        execute(serve_with_workers)
        return

    async def ready() -> None:
        async with built((spec,), wait=True):  # each worker process builds its own (hsepay.asgi)
            pass

    execute(ready)
    serve_api_processes(
        spec.name, host=host, port=port, workers=processes, header_timeout=settings().security.header_timeout
    )

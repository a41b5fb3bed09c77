"""Swagger UI served from files installed with hsepay, never from a CDN: the docs page works offline.

The files are npm's swagger-ui-dist, vendored by `tools/vendor-swagger-ui.sh` (version and checksums in
`swagger-ui/MANIFEST`; why vendored: docs/decisions.md). Litestar's SwaggerRenderPlugin loads its
scripts, stylesheet and favicon from cdn.jsdelivr.net, so a machine without internet showed a blank
page. This plugin serves the same page at `<openapi path>/swagger` with its assets under
`<openapi path>/swagger-ui/`, read once from the package and cached by browsers for a day.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from importlib import resources
from typing import Any

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath

__all__ = ["ASSETS", "OfflineSwagger", "swagger_ui_version"]

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def _dist():
    return resources.files(__package__).joinpath("swagger-ui")


@cache
def swagger_ui_version() -> str:
    """The vendored swagger-ui-dist version (first line of MANIFEST: `swagger-ui-dist 5.35.0 (npm)`)."""
    return _dist().joinpath("MANIFEST").read_text().split()[1]


@cache
def _asset(name: str) -> bytes:
    return _dist().joinpath(name).read_bytes()


class OfflineSwagger(OpenAPIRenderPlugin):
    """Swagger UI at `path` (under the OpenAPI config's path), from the package's own copy."""

    def __init__(self, path: str = "/swagger") -> None:
        super().__init__(path=path, favicon="")
        self.assets = "/schema/swagger-ui"

    def receive_router(self, router: Router) -> None:
        """Serve the assets next to the page, under the router that serves the OpenAPI documents."""
        self.assets = f"{router.path.rstrip('/')}/swagger-ui"

        @get("/swagger-ui/{name:str}", include_in_schema=False, sync_to_thread=False)
        def swagger_asset(name: FromPath[str]) -> Response[bytes]:
            media_type = ASSETS.get(name)
            if media_type is None:
                raise NotFoundException(f"no Swagger UI file {name!r}")
            # The URLs carry the version (?v=), so a day of caching never serves an old copy after an upgrade.
            return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

        router.register(swagger_asset)

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        """The page: the OpenAPI document inline, the operations laid out by Swagger UI's BaseLayout."""
        version = swagger_ui_version()
        url = f"{self.assets}/{{}}?v={version}"
        # "</" inside the inline document could close the <script> element early; "<\\/" is the same JSON.
        spec = json.dumps(openapi_schema, default=str).replace("</", "<\\/")
        title = escape(str(openapi_schema.get("info", {}).get("title", "API")))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" type="image/png" href="{url.format("favicon-32x32.png")}">
  <link rel="stylesheet" href="{url.format("swagger-ui.css")}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{url.format("swagger-ui-bundle.js")}"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      spec: {spec},
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
""".encode()

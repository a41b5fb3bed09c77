"""Swagger UI from the package's own files: the page names no other host, every file it loads is
served, and the vendored files are exactly the ones MANIFEST pins (tools/vendor-swagger-ui.sh)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.apidocs import ASSETS, swagger_ui_version
from hsepay.gateway import create_gateway_app

DIST = resources.files("hsepay.apidocs").joinpath("swagger-ui")


def _apps():
    engine = create_async_engine("postgresql+psycopg://unused/unused")  # never connected: docs only
    return {
        "payments": lambda: create_payments_app(engine),
        "orders": lambda: create_orders_app(engine),
        "gateway": create_gateway_app,
    }


def test_the_vendored_files_are_the_ones_the_manifest_pins():
    first, *lines = DIST.joinpath("MANIFEST").read_text().splitlines()
    assert first == f"swagger-ui-dist {swagger_ui_version()} (npm)" and swagger_ui_version().startswith("5.")
    pinned = dict(reversed(line.split("  ")) for line in lines)
    assert set(ASSETS) <= pinned.keys() and {"LICENSE", "NOTICE"} <= pinned.keys()
    for name, digest in pinned.items():
        assert hashlib.sha256(DIST.joinpath(name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("service", ["payments", "orders", "gateway"])
def test_the_docs_page_loads_only_files_served_next_to_it(service):
    with TestClient(app=_apps()[service]()) as client:
        page = client.get("/schema/swagger")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "cdn." not in html and "http://" not in html and "https://" not in html.split("spec:")[0]
        loaded = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert len(loaded) == 3
        for url in loaded:
            assert url.startswith("/schema/swagger-ui/") and url.endswith(f"?v={swagger_ui_version()}")
            asset = client.get(url)
            name = url.split("/")[-1].split("?")[0]
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(ASSETS[name].split(";")[0])
            assert asset.content == DIST.joinpath(name).read_bytes()
        assert client.get("/schema/swagger-ui/MANIFEST").status_code == 404  # only what the page loads
        assert client.get("/schema/swagger-ui/..%2F__init__.py").status_code == 404

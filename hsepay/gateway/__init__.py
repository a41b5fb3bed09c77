"""The gateway on :3000: the original system's /api paths in front of the two APIs, and /api/summary."""

from hsepay.gateway.app import create_gateway_app

__all__ = ["create_gateway_app"]

"""Local TCP ports: a free one to listen on, and whether a given one can be listened on now."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["free_port", "free_ports", "port_problem"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open at once while chosen, so none is handed out twice."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket(_family(host))) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (another process may take it before the caller does)."""
    return free_ports(1, host)[0]


def port_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on host:port now (the system's words, e.g. "Address already in use"),
    or None if it could. Bound as servers bind, with SO_REUSEADDR: a port left in TIME_WAIT is free."""
    with socket.socket(_family(host)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET

"""Structured logs (structlog) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_TOTAL = Counter("befriend_rpc_total", "RPCs finished, by method and code", ["method", "code"])
RPC_ERRORS = Counter(
    "befriend_rpc_errors_total", "RPCs finished with a non-OK code", ["method", "code"]
)
PHONEBOOK_LISTS = Counter(
    "befriend_phonebook_lists_total",
    "Phonebook lists asked for: kept (books and membership unchanged since derived) or derived",
    ["result"],
)
INDEX_ENTRIES = Gauge(
    "befriend_index_entries",
    "Entries in this process's in-memory indexes: registry (members' identity keys), "
    "holders (book key pairs of the reverse index, stale and repeated ones included)",
    ["index"],
)
INDEX_LOADS = Counter(
    "befriend_index_loads_total",
    "Whole reads of an in-memory index from the database: load (first use, or fallen behind "
    "the pruned log; lookups wait) or rebuild (the holders' daily one; lookups go on)",
    ["index", "kind"],
)
RPC_LATENCY = Histogram(
    "befriend_rpc_duration_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s", force=True)
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    # APScheduler logs every run of every job at INFO, and the SQLite checkpoint runs twice a
    # second; the jobs log their own outcomes.
    logging.getLogger("apscheduler").setLevel(max(numeric, logging.WARNING))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class BindError(Exception):
    """A port the server was told to listen on could not be bound (in use, or not ours)."""

    def __init__(self, what: str, address: str) -> None:
        super().__init__(f"cannot listen on {address} ({what}): in use or not permitted")
        self.what, self.address = what, address


def start_metrics_server(host: str, port: int) -> int | None:
    """Serve /metrics; returns the bound port, or None when disabled (port < 0)."""
    if port < 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise BindError("metrics", f"{host}:{port}") from exc
    return int(server.server_port)


log = structlog.get_logger("befriend")

"""Server configuration: one dataclass, read from ``BEFRIEND_*`` variables and flags.

Every field of :class:`Settings` is a flag ``--field-name`` and an environment variable
``BEFRIEND_FIELD_NAME``; flags win over the environment, the environment over defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind"})
    port: int = field(default=50051, metadata={"help": "gRPC port (0 picks a free one)"})
    workers: int = field(
        default=1, metadata={"help": "server processes sharing the port via SO_REUSEPORT"}
    )
    database_url: str = field(
        default="sqlite:///var/befriend.db",
        metadata={"help": "SQLAlchemy URL; postgresql+psycopg://... for PostgreSQL"},
    )
    migrate: bool = field(
        default=True, metadata={"help": "apply migrations on start (--no-migrate to skip)"}
    )
    metrics_port: int = field(
        default=9464, metadata={"help": "Prometheus /metrics HTTP port (-1 disables)"}
    )
    metrics_host: str = field(default="127.0.0.1", metadata={"help": "metrics bind address"})
    service_token: str = field(
        default="",
        metadata={"help": "token for internal RPCs (payments, receipts, admin); empty disables"},
    )
    grace_seconds: float = field(
        default=15.0, metadata={"help": "SIGTERM grace period for in-flight calls"}
    )
    max_message_bytes: int = field(
        default=8 * MiB, metadata={"help": "max request/response message size"}
    )
    max_concurrent_rpcs: int = field(
        default=1000, metadata={"help": "concurrent RPCs per process before RESOURCE_EXHAUSTED"}
    )
    default_deadline_seconds: float = field(
        default=30.0,
        metadata={"help": "deadline applied to calls that arrive without one (0 = none)"},
    )
    db_threads: int = field(default=8, metadata={"help": "threads running database work"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning, error"})
    log_format: str = field(default="json", metadata={"help": "json or console"})
    daily_key_quota: int = field(
        default=20_000,
        metadata={"help": "new distinct phonebook keys a user may submit per day (0 = no limit)"},
    )
    weak_key_matching: bool = field(
        default=False,
        metadata={"help": "match unnormalisable numbers by their rightmost 7 digits"},
    )
    refresh_cron: str = field(
        default="0 3 1 * *",
        metadata={"help": "crontab (UTC) of the bulk re-match; empty disables (monthly default)"},
    )
    idempotency_ttl_hours: float = field(
        default=24.0, metadata={"help": "how long request_id answers are kept"}
    )
    event_retention_days: int = field(
        default=30,
        metadata={
            "help": "days buddy events and contact tombstones are kept for the change feeds "
            "(pruned daily; older cursors expire); 0 keeps them all"
        },
    )
    retention_cron: str = field(
        default="30 4 * * *",
        metadata={
            "help": "crontab (UTC) of the daily pruning of the event and change logs (also "
            "with event retention 0: the internal logs are pruned still); empty disables"
        },
    )
    index_dir: str = field(
        default="",
        metadata={
            "help": "directory of snapshots of the in-memory indexes (members' keys, the "
            "reverse index), shared by the server processes of one machine: one reads the "
            "database, the others map its files (one copy in memory; restarts map them too); "
            "one directory per database; empty: each process reads the database"
        },
    )
    holder_rebuild_cron: str = field(
        default="0 4 * * *",
        metadata={
            "help": "crontab (UTC) of each server process's rebuild of its in-memory "
            "reverse index from the books, dropping keys removed since; empty disables"
        },
    )
    pending_match_seconds: float = field(
        default=60.0,
        metadata={
            "help": "an upload matches its keys when its final chunk commits; one that stops "
            "before it is matched this many seconds after its first unmatched batch "
            "(0 disables the job)"
        },
    )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


ENV_PREFIX = "BEFRIEND_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(kind: Any, raw: str, name: str) -> Any:
    if kind in (bool, "bool"):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{name}: expected a boolean, got {raw!r}")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    return raw


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``BEFRIEND_*`` variables, then keyword overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = ENV_PREFIX + f.name.upper()
        if key in env:
            values[f.name] = _convert(f.type, env[key], key)
    values.update(overrides)
    return Settings(**values)


def parser(prog: str = "befriend serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="befriend gRPC server. Flags override BEFRIEND_* variables."
    )
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        help_text = f"{f.metadata.get('help', '')} (env {env}; default {f.default!r})"
        if f.type in (bool, "bool"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            conv = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, dest=f.name, type=conv, help=help_text)
    return p


def from_args(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    ns = parser().parse_args(list(argv))
    overrides = {k: v for k, v in vars(ns).items() if v is not None}
    return from_env(env, **overrides)


def replace(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, **changes)

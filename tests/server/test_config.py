from __future__ import annotations

import logging

import pytest

from befriend.server import config
from befriend.server.observability import configure_logging


def test_defaults() -> None:
    s = config.from_env({})
    assert s.address == "127.0.0.1:50051"
    assert s.database_url == "sqlite:///var/befriend.db"
    assert s.migrate is True


def test_env_then_flags() -> None:
    env = {"BEFRIEND_PORT": "6000", "BEFRIEND_MIGRATE": "false", "BEFRIEND_WORKERS": "3"}
    s = config.from_args(["--port", "7000", "--grace-seconds", "2.5"], env)
    assert s.port == 7000  # flag beats env
    assert s.workers == 3  # env beats default
    assert s.migrate is False
    assert s.grace_seconds == 2.5
    assert config.from_args(["--migrate"], env).migrate is True


def test_bad_env_value_is_named() -> None:
    with pytest.raises(ValueError, match="BEFRIEND_MIGRATE"):
        config.from_env({"BEFRIEND_MIGRATE": "perhaps"})
    with pytest.raises(ValueError):
        config.from_env({"BEFRIEND_PORT": "fifty"})


def test_scheduler_runs_are_not_logged_at_info() -> None:
    """The SQLite checkpoint job runs twice a second; APScheduler would log each run."""
    configure_logging("info")
    assert logging.getLogger("apscheduler.executors.default").getEffectiveLevel() >= logging.WARNING
    assert not logging.getLogger("apscheduler").isEnabledFor(logging.INFO)
    configure_logging("debug")
    assert logging.getLogger("apscheduler").isEnabledFor(logging.WARNING)

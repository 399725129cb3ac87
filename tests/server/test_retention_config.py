"""The event-retention settings: ``event_retention_days`` and the pruning schedule."""

from __future__ import annotations

from befriend.server import config


def test_event_retention_defaults() -> None:
    s = config.from_env({})
    assert s.event_retention_days == 30
    assert s.retention_cron == "30 4 * * *"


def test_event_retention_from_env_and_flags() -> None:
    env = {"BEFRIEND_EVENT_RETENTION_DAYS": "7", "BEFRIEND_RETENTION_CRON": ""}
    s = config.from_env(env)
    assert s.event_retention_days == 7 and s.retention_cron == ""
    assert config.from_args(["--event-retention-days", "90"], env).event_retention_days == 90
    assert "--event-retention-days" in config.parser().format_help()

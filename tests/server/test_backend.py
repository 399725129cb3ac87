"""Background work on the database threads: a failure nobody awaits is still logged."""

from __future__ import annotations

from structlog.testing import capture_logs

from befriend.server.api.backend import Backend
from befriend.server.storage.db import Database


def test_a_failing_background_job_is_logged(db: Database) -> None:
    backend = Backend(db, threads=1)

    def job() -> None:
        raise RuntimeError("refresh fell over")

    with capture_logs() as logs:
        backend.spawn(job)
        backend.spawn(lambda: None)
        backend.executor.shutdown(wait=True)
    failed = [e for e in logs if e["event"] == "background.failed"]
    assert len(failed) == 1
    assert str(failed[0]["exc_info"]) == "refresh fell over"

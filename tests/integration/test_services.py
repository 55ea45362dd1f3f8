"""The local service runner against the running services: `make up` is idempotent."""

from __future__ import annotations

import pytest

from infra.health import check_services
from infra.services import runner
from infra.settings import Settings

pytestmark = pytest.mark.integration


def test_all_three_answer(settings: Settings) -> None:
    check_services(settings)  # raises ServicesUnavailable otherwise


def test_up_again_reuses_what_runs(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    before = {svc.name: svc.running_pid() for svc in runner.services(settings)}
    assert runner.up(settings) == 0
    after = {svc.name: svc.running_pid() for svc in runner.services(settings)}
    assert after == before  # nothing restarted, nothing new started
    out = capsys.readouterr().out
    for svc in runner.services(settings):
        line = next(line for line in out.splitlines() if line.startswith(svc.title))
        assert "already running" in line or "already listening" in line, line

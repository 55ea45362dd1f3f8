"""Fail fast, and say what to do, when Kafka, MySQL or Redis does not answer.

Gateways, processors and the test suite call ``check_services`` at startup.
"""

from __future__ import annotations

from infra.services.probes import ProbeError
from infra.services.runner import services
from infra.settings import Settings


class ServicesUnavailable(RuntimeError):
    """One or more of Kafka, MySQL and Redis does not answer."""


def check_services(settings: Settings | None = None) -> None:
    """Raise ServicesUnavailable naming every service that does not answer and the fix."""
    settings = settings or Settings.from_env()
    problems = []
    for svc in services(settings):
        try:
            svc.probe()
        except ProbeError as exc:
            problems.append(f"  - {svc.title} at {svc.endpoint()} ({svc.env_hint}): {exc}")
    if problems:
        raise ServicesUnavailable(
            "BitEx needs Kafka, MySQL and Redis, and these do not answer:\n"
            + "\n".join(problems)
            + "\nStart the local ones with `make up`, or set the BITEX_ variables to point at "
            "running servers."
        )

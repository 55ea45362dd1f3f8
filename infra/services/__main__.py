"""`python -m infra.services up|down|status` — works before any dependency is installed."""

from __future__ import annotations

import argparse
import sys

from infra.services import runner
from infra.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.services",
        description="Start, stop or inspect BitEx's local Kafka, MySQL and Redis.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    action = {"up": runner.up, "down": runner.down, "status": runner.status}[args.action]
    return action(settings)


if __name__ == "__main__":
    sys.exit(main())

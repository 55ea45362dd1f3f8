"""The `bitex` command. Subcommands: `services up|down|status`, `endpoints`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from infra.settings import Settings


def _services(args: argparse.Namespace, settings: Settings) -> int:
    from infra.services import runner

    actions: dict[str, Callable[[Settings], int]] = {
        "up": runner.up,
        "down": runner.down,
        "status": runner.status,
    }
    return actions[args.action](settings)


def _endpoints(args: argparse.Namespace, settings: Settings) -> int:
    rows = [
        ("Kafka", settings.kafka_bootstrap),
        ("MySQL", settings.mysql_url_safe),
        ("Redis", settings.redis_url),
        ("HTTP API", f"{settings.http_url}  (not served yet: the gateways come in later issues)"),
    ]
    for name, value in rows:
        print(f"{name:<9} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitex", description="BitEx exchange backend tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    services = sub.add_parser(
        "services", help="start, stop or inspect the local Kafka, MySQL and Redis"
    )
    services.add_argument("action", choices=["up", "down", "status"])
    services.set_defaults(func=_services)

    endpoints = sub.add_parser("endpoints", help="print where BitEx finds its services and API")
    endpoints.set_defaults(func=_endpoints)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    return func(args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())

"""The `bitex` command: `services up|down|status`, `endpoints`, `topics`, `worker ROLE`, `run`."""

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


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from infra.kafka_admin import ensure_topics
    from infra.topics import TopicMap

    topics = TopicMap.from_env()
    created = asyncio.run(ensure_topics(topics.specs(), settings))
    for spec in topics.specs():
        state = "created" if spec.name in created else "ok"
        print(f"{spec.name:<40} {spec.partitions:>3} partitions  {state}")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    # The CLI is the composition root: it may start what lives above infra.
    from streams.app import run_worker

    _topics(args, settings)
    run_worker(args.role)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Everything that exists, in the foreground, until Ctrl-C."""
    import signal
    import time

    from domain.markets import demo_markets
    from infra.topics import TopicMap
    from streams.workers import WORKER_ROLES, WriteSide

    _topics(args, settings)
    workers = WriteSide(settings, TopicMap.from_env(), settings.state_dir / "logs")
    for role in WORKER_ROLES:
        workers.start(role)
    print("\nMarkets:")
    for market in demo_markets().values():
        print(
            f"  {market.symbol:<9} tick {market.tick_size}  lot {market.lot_size}  "
            f"fees maker {market.maker_fee.rate} / taker {market.taker_fee.rate}"
        )
    print("\nProcessors:")
    for role, child in workers.processes.items():
        print(f"  {role:<9} pid {child.pid}  log {workers.log_path(role)}")
    print()
    _endpoints(args, settings)
    print("\nRunning; Ctrl-C stops the processors (make down stops the services).")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            if exited := workers.exited():
                print(f"processor {exited[0]} exited; see its log", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        workers.stop()


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

    topics = sub.add_parser("topics", help="create the Kafka topics (idempotent)")
    topics.set_defaults(func=_topics)

    worker = sub.add_parser("worker", help="run a write-side processor until stopped")
    worker.add_argument("role", choices=["accounts", "matching"])
    worker.set_defaults(func=_worker)

    run = sub.add_parser("run", help="run the processors in the foreground and print endpoints")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    return func(args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())

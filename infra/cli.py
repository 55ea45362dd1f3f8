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


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from infra.migrate import create_database, upgrade

    if args.database:
        create_database(settings, args.database)
        print(f"MySQL database {args.database} migrated to the newest schema")
    else:
        upgrade(settings)
        print(f"MySQL read models at the newest schema ({settings.mysql_url_safe})")
    return 0


def _lag(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from domain.markets import demo_markets
    from infra.redis_keys import RedisKeys
    from infra.topics import TopicMap
    from projections.runner import default_projections, measure_lag

    async def report() -> int:
        topics = TopicMap.from_env()
        keys = RedisKeys.for_prefix(topics.prefix)
        projections = default_projections(settings, keys, demo_markets())
        try:
            rows = await measure_lag(projections, settings, topics)
        finally:
            for projection in projections:
                await projection.close()
        header = ("projection", "topic", "part", "applied", "end", "lag")
        print("{:<11} {:<28} {:>4} {:>10} {:>10} {:>8}".format(*header))
        for row in rows:
            print(
                f"{row.projection:<11} {row.topic:<28} {row.partition:>4} "
                f"{row.applied:>10} {row.end:>10} {row.behind:>8}"
            )
        return 0

    return asyncio.run(report())


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    # The CLI is the composition root: it may start what lives above infra.
    _topics(args, settings)
    if args.role == "projections":
        from projections.runner import run_worker as run_projections

        run_projections()
    else:
        from streams.app import run_worker

        run_worker(args.role)
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    uvicorn.run(
        "queries.app:create_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=False,
        ws_per_message_deflate=False,
    )
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Everything that exists, in the foreground, until Ctrl-C."""
    import signal
    import time

    from domain.markets import demo_markets
    from infra.topics import TopicMap
    from streams.workers import READ_ROLES, WORKER_ROLES, WriteSide

    _topics(args, settings)
    workers = WriteSide(settings, TopicMap.from_env(), settings.state_dir / "logs")
    for role in (*WORKER_ROLES, *READ_ROLES):
        workers.start(role)
    print("\nMarkets:")
    for market in demo_markets().values():
        print(
            f"  {market.symbol:<9} tick {market.tick_size}  lot {market.lot_size}  "
            f"fees maker {market.maker_fee.rate} / taker {market.taker_fee.rate}"
        )
    print("\nProcesses:")
    for role, child in workers.processes.items():
        print(f"  {role:<11} pid {child.pid}  log {workers.log_path(role)}")
    print()
    _endpoints(args, settings)
    print("\nRunning; Ctrl-C stops these processes (make down stops the services).")
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

    migrate = sub.add_parser("migrate", help="bring the MySQL read-model schema up to date")
    migrate.add_argument("--database", help="migrate this database instead (created if missing)")
    migrate.set_defaults(func=_migrate)

    worker = sub.add_parser("worker", help="run a processor or the projections until stopped")
    worker.add_argument("role", choices=["accounts", "matching", "projections"])
    worker.set_defaults(func=_worker)

    serve = sub.add_parser("serve", help="serve the HTTP API and WebSocket until stopped")
    serve.set_defaults(func=_serve)

    lag = sub.add_parser("lag", help="how far each read model is behind the event topics")
    lag.set_defaults(func=_lag)

    run = sub.add_parser("run", help="run the processors in the foreground and print endpoints")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    return func(args, Settings.from_env())


if __name__ == "__main__":
    sys.exit(main())

"""The `bitex` command: services, endpoints, topics, migrate, worker, serve, operator, lag,
replay, statement, run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

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
    from infra.worker_http import LOCAL_PORTS, metrics_port

    rows = [
        ("Kafka", settings.kafka_bootstrap),
        ("MySQL", settings.mysql_url_safe),
        ("Redis", settings.redis_url),
        ("HTTP API", f"{settings.http_url}  (writes and reads; {settings.http_url}/openapi.json)"),
        ("WebSocket", f"{settings.http_url.replace('http', 'ws', 1)}/v1/ws"),
    ]
    for role in LOCAL_PORTS:
        port = metrics_port(role)
        if port is not None:
            rows.append((role, f"http://{settings.http_host}:{port}/metrics  (/healthz, /readyz)"))
    for name, value in rows:
        print(f"{name:<11} {value}")
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

    from infra.redis_keys import RedisKeys
    from infra.topics import TopicMap
    from projections.runner import default_projections, measure_lag

    async def report() -> int:
        topics = TopicMap.from_env()
        keys = RedisKeys.for_prefix(topics.prefix)
        projections = default_projections(settings, keys, {})
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
    import asyncio

    from infra.kafka_admin import ensure_topics
    from infra.topics import TopicMap

    asyncio.run(ensure_topics(TopicMap.from_env().specs(), settings))  # its log is JSON only
    if args.role == "projections":
        from projections.runner import run_worker as run_projections

        run_projections()
    else:
        from streams.app import run_worker

        run_worker(args.role, args.instance)
    return 0


SERVED_APPS = {
    "api": "infra.api:create_api",
    "commands": "commands.app:create_app",
    "queries": "queries.app:create_app",
}


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """One base URL for both gateways, or one gateway alone (``--only``)."""
    import os

    import uvicorn

    from infra.logs import log_level, logging_config

    workers = args.workers or int(os.environ.get("BITEX_HTTP_WORKERS", "1"))
    uvicorn.run(
        SERVED_APPS[args.only or "api"],
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        workers=workers if workers > 1 else None,
        log_config=logging_config(),
        log_level=log_level().lower(),
        access_log=False,
        ws_per_message_deflate=False,
    )
    return 0


DEMO_OPERATOR = ("operator@bitex.local", "bitex-demo-operator")
"""The operator ``bitex run`` creates, for local use only."""


def _operator(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from commands.app import MIN_PASSWORD, registration
    from domain.errors import DomainError
    from domain.users import Role, normal_email
    from infra.auth import hash_password
    from infra.command_client import CommandClient
    from infra.topics import TopicMap

    try:
        email = normal_email(args.email)
    except DomainError as error:
        print(f"bitex operator add: {error.message}", file=sys.stderr)
        return 2
    if len(args.password) < MIN_PASSWORD:
        print(f"bitex operator add: the password needs {MIN_PASSWORD}+ characters", file=sys.stderr)
        return 2
    command = registration(email, hash_password(args.password), Role.OPERATOR)

    async def add() -> int:
        async with CommandClient(settings, TopicMap.from_env()) as client:
            outcome = await client.execute(command, timeout=args.timeout)
        if outcome is None:
            print(
                f"bitex operator add: no answer within {args.timeout} s; is the account "
                "processor running? (`make run` starts it)",
                file=sys.stderr,
            )
            return 1
        if outcome.ok:
            print(f"operator {email} created (user {command.fields['user_id']})")
            return 0
        if outcome.code == "email_taken" and args.exist_ok:
            print(f"operator {email} exists already")
            return 0
        print(f"bitex operator add: {outcome.message} ({outcome.code})", file=sys.stderr)
        return 1

    return asyncio.run(add())


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Everything that exists, in the foreground, until Ctrl-C."""
    import asyncio
    import signal
    import time

    from infra.topics import TopicMap
    from streams.workers import READ_ROLES, WORKER_ROLES, WriteSide

    _topics(args, settings)
    workers = WriteSide(
        settings, TopicMap.from_env(), settings.state_dir / "logs", local_metrics_ports=True
    )
    for role in (*WORKER_ROLES, *READ_ROLES):
        workers.start(role)
    asyncio.run(workers.wait_ready("accounts"))  # lists the demo markets, by command
    email, password = DEMO_OPERATOR
    operator = argparse.Namespace(email=email, password=password, timeout=60.0, exist_ok=True)
    if _operator(operator, settings) != 0:
        workers.stop()
        return 1
    print("\nMarkets (listed through POST /v1/admin/markets's command path):")
    for market in workers.markets.values():
        print(
            f"  {market.symbol:<9} tick {market.tick_size}  lot {market.lot_size}  "
            f"fees maker {market.maker_fee.rate} / taker {market.taker_fee.rate}"
        )
    print("\nProcesses:")
    for role, child in workers.processes.items():
        print(f"  {role:<11} pid {child.pid}  log {workers.log_path(role)}")
    print(f"\nDemo operator (may deposit, list markets): {email}  password {password}")
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


def _moment(text: str) -> datetime:
    """An ISO 8601 time (``2026-01-01T12:00:00Z``); without a zone it is UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    """The audit (projections/audit.py): exit 0 only if every check holds."""
    import asyncio

    from infra.topics import TopicMap
    from projections.audit import Options, ProgressLine, audit, print_report, write_report
    from projections.audit_replay import Cut, parse_offsets

    topics = TopicMap.from_env()
    try:
        offsets = parse_offsets(args.until_offset or "", topics)
    except ValueError as error:
        print(f"bitex replay: {error}", file=sys.stderr)
        return 2
    if args.rebuild and (args.until or offsets):
        print("bitex replay: --rebuild projects the whole log; drop --until", file=sys.stderr)
        return 2
    options = Options(
        cut=Cut(args.until, offsets),
        compare=not args.no_compare,
        rebuild=args.rebuild,
        processes=args.processes,
    )
    progress = None if args.quiet else ProgressLine()
    report = asyncio.run(
        audit(
            settings,
            topics,
            {},  # the replay finds each market's listing on the log
            options,
            progress,
            log=None if args.quiet else sys.stderr,
        )
    )
    if progress is not None:
        progress.close()
    print_report(report, sys.stdout)
    if args.report:
        write_report(report, args.report)
        print(f"report: {args.report}")
    return 0 if report.ok else 1


def _statement(args: argparse.Namespace, settings: Settings) -> int:
    """An account's ledger as CSV (projections/audit_statement.py); exit 0 if it reconciles."""
    import asyncio

    from infra.topics import TopicMap
    from projections.audit_statement import statement, write_csv
    from projections.listings import read_listings

    topics = TopicMap.from_env()
    markets = asyncio.run(read_listings(settings, topics))  # the log says which markets exist
    found = asyncio.run(statement(settings, topics, markets, args.account, args.start, args.end))
    if args.output:
        with args.output.open("w", newline="") as out:
            write_csv(found, markets, out)
    else:
        write_csv(found, markets, sys.stdout)
    problems = found.mismatches() + [f"[{v.check}] {v.message}" for v in found.violations]
    held = "" if found.held is None else "; closing equals the account's replayed balances"
    print(
        f"statement: {len(found.entries)} entries; opening + entries = closing{held}"
        if not problems
        else "statement: does not reconcile",
        file=sys.stderr,
    )
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if not problems else 1


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
    worker.add_argument(
        "--instance",
        type=int,
        default=0,
        help="this processor's number among its role's workers (its static group membership)",
    )
    worker.set_defaults(func=_worker)

    serve = sub.add_parser("serve", help="serve the HTTP API and WebSocket until stopped")
    serve.add_argument(
        "--only", choices=["commands", "queries"], help="serve one gateway (default: both)"
    )
    serve.add_argument("--workers", type=int, help="processes (default BITEX_HTTP_WORKERS or 1)")
    serve.set_defaults(func=_serve)

    operator = sub.add_parser(
        "operator", help="manage operators (who may deposit and list markets)"
    )
    operator_sub = operator.add_subparsers(dest="operator_action", required=True, metavar="ACTION")
    add = operator_sub.add_parser("add", help="create an operator (needs the processors running)")
    add.add_argument("--email", required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--exist-ok", action="store_true", help="succeed if the e-mail exists")
    add.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    add.set_defaults(func=_operator)

    lag = sub.add_parser("lag", help="how far each read model is behind the event topics")
    lag.set_defaults(func=_lag)

    replay = sub.add_parser(
        "replay",
        help="audit: rebuild every aggregate from the log, check it, compare the read models",
    )
    replay.add_argument(
        "--until", type=_moment, help="ISO time: the state as of then (events stamped at or before)"
    )
    replay.add_argument(
        "--until-offset",
        metavar="TOPIC:PARTITION=OFFSET[,...]",
        help="stop each named partition before OFFSET (a report's positions)",
    )
    replay.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report")
    replay.add_argument(
        "--rebuild",
        action="store_true",
        help="first drop the MySQL and Redis read models and project the log again "
        "(stop the projections worker first)",
    )
    replay.add_argument("--no-compare", action="store_true", help="skip the read models")
    replay.add_argument(
        "--processes", type=int, choices=[1, 2], help="default: 2 for long logs on 2+ CPUs"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress lines")
    replay.set_defaults(func=_replay)

    statement = sub.add_parser(
        "statement", help="an account's ledger as CSV, with opening and closing balances"
    )
    statement.add_argument(
        "--account", required=True, help="account id, or fees, external, clearing:<SYMBOL>"
    )
    statement.add_argument("--from", dest="start", type=_moment, help="ISO time (inclusive)")
    statement.add_argument("--to", dest="end", type=_moment, help="ISO time (exclusive)")
    statement.add_argument("--output", "-o", type=Path, help="CSV file (default: stdout)")
    statement.set_defaults(func=_statement)

    run = sub.add_parser("run", help="run the processors in the foreground and print endpoints")
    run.set_defaults(func=_run)
    return parser


NEEDS_SERVICES = frozenset({_worker, _serve, _run, _operator})
"""Commands that start a role: they say which service is missing before anything else."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    settings = Settings.from_env()
    if func in NEEDS_SERVICES:
        from infra.health import ServicesUnavailable, check_services

        try:
            check_services(settings)
        except ServicesUnavailable as missing:
            print(missing, file=sys.stderr)
            return 2
    return func(args, settings)


if __name__ == "__main__":
    sys.exit(main())

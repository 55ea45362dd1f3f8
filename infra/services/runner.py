"""`up`, `down` and `status` over the three local services.

Rules: a server already answering on the configured address is used as it is and
never stopped; only what BitEx started (recorded in a pidfile whose process still
carries our signature) is stopped; everything lives under the state directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from infra.services import process
from infra.services.base import Service, is_loopback
from infra.services.kafka import Kafka
from infra.services.mysql import MySQL
from infra.services.probes import ProbeError, port_open
from infra.services.redis import Redis
from infra.settings import Settings

ServiceError = process.ServiceError


def services(settings: Settings) -> list[Service]:
    return [Kafka(settings), MySQL(settings), Redis(settings)]


def _line(svc: Service, message: str) -> None:
    process.say(f"{svc.title:<6} {message}")


def _answers(svc: Service, grace: float = 0.0) -> str | None:
    """The probe's description if the service answers (retrying for `grace` s), else None."""
    deadline = time.monotonic() + grace
    while True:
        try:
            return svc.probe()
        except ProbeError:
            if time.monotonic() >= deadline:
                return None
        time.sleep(0.5)


def _parallel(items: list[Service], fn: Callable[[Service], None]) -> list[str]:
    """Run fn over items in threads; return the error messages."""
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=len(items) or 1) as pool:
        futures = {svc.name: pool.submit(fn, svc) for svc in items}
        for svc in items:
            try:
                futures[svc.name].result()
            except ServiceError as exc:
                errors.append(f"{svc.title}: {exc}")
    return errors


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One `up` or `down` at a time per state directory (pidfiles stay truthful)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / "runner.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(settings: Settings) -> int:
    """Start what is missing, wait until every service answers. Returns an exit code."""
    with _locked(settings):
        return _up(settings)


def _up(settings: Settings) -> int:
    to_start: list[Service] = []
    errors: list[str] = []
    for svc in services(settings):
        host, port = svc.address
        pid = svc.running_pid()
        if pid is not None:
            to_start.append(svc)  # ours: just wait for it below
            continue
        # Someone else's server: use it as it is. (If the port is open but the protocol
        # does not answer yet, it may still be starting: give it a moment.)
        description = _answers(svc, grace=15 if port_open(host, port) else 0)
        if description is not None:
            _line(svc, f"using the {svc.title} already listening on {host}:{port} ({description})")
            try:
                svc.check_external()
            except ServiceError as exc:
                errors.append(f"{svc.title}: {exc}")
            continue
        if not is_loopback(host):
            errors.append(
                f"{svc.title}: no {svc.title} answers on {host}:{port}. BitEx starts local "
                f"servers only on 127.0.0.1; start that one, or unset {svc.env_hint}."
            )
            continue
        if port_open(host, port):
            errors.append(
                f"{svc.title}: something listens on {host}:{port} but does not answer like "
                f"{svc.title}. Stop it, or point BitEx elsewhere with {svc.env_hint}."
            )
            continue
        to_start.append(svc)

    # One apt-get run for everything missing (it holds a lock; installs are serial anyway).
    packages = [p for svc in to_start if svc.running_pid() is None for p in svc.missing_packages()]
    if packages:
        try:
            process.install_debian_packages(
                packages,
                why=f"Starting the local services needs {', '.join(packages)}",
                logfile=settings.state_dir / "apt.log",
            )
        except ServiceError as exc:
            errors.append(str(exc))
            to_start = [svc for svc in to_start if svc.running_pid() is not None]

    def bring_up(svc: Service) -> None:
        pid = svc.running_pid()
        host, port = svc.address
        if pid is None:
            t0 = time.monotonic()
            svc.prepare()
            pid = svc.start()
            svc.wait_ready(pid)
            svc.after_start()
            _line(
                svc,
                f"started on {host}:{port} in {time.monotonic() - t0:.1f} s "
                f"(pid {pid}; data {process.show_path(svc.home)}, "
                f"log {process.show_path(svc.logfile)})",
            )
        else:
            svc.wait_ready(pid)
            svc.after_start()
            _line(svc, f"already running on {host}:{port} (pid {pid}, started by BitEx)")

    errors += _parallel(to_start, bring_up)
    for error in errors:
        process.say(f"\nERROR {error}")
    return 1 if errors else 0


def down(settings: Settings) -> int:
    """Stop what BitEx started; leave everything else alone."""
    with _locked(settings):
        return _down(settings)


def _down(settings: Settings) -> int:

    def bring_down(svc: Service) -> None:
        pid = svc.running_pid()
        if pid is None:
            host, port = svc.address
            if port_open(host, port):
                _line(svc, f"not started by BitEx, left running on {host}:{port}")
            else:
                _line(svc, "not running")
            return
        t0 = time.monotonic()
        process.stop(pid, svc.signature, svc.stop_timeout)
        svc.pidfile.unlink(missing_ok=True)
        _line(svc, f"stopped (pid {pid}) in {time.monotonic() - t0:.1f} s")

    errors = _parallel(services(settings), bring_down)
    for error in errors:
        process.say(f"ERROR {error}")
    return 1 if errors else 0


def status(settings: Settings) -> int:
    """Print each service's state. Exit code 0 when all three answer, else 3."""
    all_up = True
    for svc in services(settings):
        pid = svc.running_pid()
        description = _answers(svc)
        owner = f"started by BitEx, pid {pid}" if pid is not None else "not started by BitEx"
        if description is not None:
            _line(svc, f"up    {svc.endpoint():<22} {description}; {owner}")
        else:
            all_up = False
            state = "starting or failing" if pid is not None else "down"
            _line(svc, f"{state:<5} {svc.endpoint():<22} (start it with `make up`)")
    return 0 if all_up else 3

"""Process handling shared by the local services: start detached, pidfiles, stop.

Only a pid whose /proc/<pid>/cmdline still contains the service's *signature* (a
string naming our own state directory) is ever signalled, so a stale pidfile can
never make us kill an unrelated process. Also: installing Debian packages without
letting them start their own system services. Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from infra.services.probes import ProbeError

SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class ServiceError(Exception):
    """A service could not be installed, started or stopped; the message says why."""


def say(message: str) -> None:
    print(message, flush=True)


def show_path(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter logs)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def which(name: str) -> str | None:
    """shutil.which, also looking in the sbin directories (daemons live there)."""
    path = os.environ.get("PATH", os.defpath)
    extra = [d for d in SBIN_DIRS if d not in path.split(os.pathsep)]
    return shutil.which(name, path=os.pathsep.join([path, *extra]))


def log_tail(logfile: Path, lines: int = 25) -> str:
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) if tail else "(log is empty)"


# -- pids -------------------------------------------------------------------------------


def cmdline(pid: int) -> str | None:
    """The command line of a live process, arguments joined by spaces; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state in ("Z", "X") or not raw:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (whatever it runs)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def is_ours(pid: int, signature: str) -> bool:
    line = cmdline(pid)
    return line is not None and signature in line


def read_pidfile(pidfile: Path, signature: str) -> int | None:
    """The pid recorded in pidfile if that process is alive and still ours.

    A stale pidfile (process gone, or pid reused by something else) is removed.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    for _ in range(3):  # a process in the middle of exec() briefly has no cmdline
        if is_ours(pid, signature):
            return pid
        if not alive(pid):
            break
        time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


# -- start / wait / stop ----------------------------------------------------------------


def start_detached(
    cmd: Sequence[str],
    *,
    cwd: Path,
    logfile: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
) -> int:
    """Start cmd in its own session (it outlives us), output appended to logfile."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log, open(os.devnull, "rb") as devnull:
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    pidfile.write_text(f"{proc.pid}\n")
    # It is a daemon now and we never wait() for it; tell Popen not to warn about that.
    proc.returncode = 0
    return proc.pid


def wait_ready(
    probe: Callable[[], object],
    *,
    title: str,
    pid: int,
    logfile: Path,
    timeout: float,
) -> None:
    """Poll probe() until it succeeds; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    last = "not probed yet"
    while True:
        try:
            probe()
            return
        except ProbeError as exc:
            last = str(exc)
        # alive(), not is_ours(): a launcher that re-execs itself (java does) briefly
        # shows an empty command line; the pid we just started cannot be reused yet.
        if not alive(pid):
            raise ServiceError(
                f"{title} exited during startup. Its log is {show_path(logfile)}; last lines:\n"
                + log_tail(logfile)
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{title} (pid {pid}) did not become ready within {timeout:.0f} s ({last}). "
                f"Its log is {show_path(logfile)}; last lines:\n" + log_tail(logfile)
            )
        time.sleep(0.25)


def stop(pid: int, signature: str, timeout: float) -> bool:
    """SIGTERM the process group led by pid, SIGKILL it after timeout.

    Returns False (and does nothing) if pid is no longer our process.
    """
    if not is_ours(pid, signature):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_members(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


# -- Debian packages --------------------------------------------------------------------

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@contextlib.contextmanager
def no_service_autostart() -> Iterator[None]:
    """Forbid package scripts to start system services (policy-rc.d exit 101)."""
    if POLICY_RC_D.exists():
        yield  # someone else's policy is in place; leave it alone
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# written by BitEx while installing packages\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def install_debian_packages(packages: Sequence[str], *, why: str, logfile: Path) -> None:
    """apt-get install packages (as root), never starting their system services."""
    names = " ".join(packages)
    if not shutil.which("apt-get"):
        raise ServiceError(
            f"{why}, and this machine has no apt-get. Install the equivalent of the Debian "
            f"package(s) {names} with your package manager, then run `make up` again."
        )
    if os.geteuid() != 0:
        raise ServiceError(
            f"{why}. Install it with `sudo apt-get install -y {names}` "
            "(BitEx installs packages itself only when run as root), then run `make up` again."
        )
    say(f"installing Debian package(s) {names} (log: {show_path(logfile)}) ...")
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",
        *packages,
    ]
    with no_service_autostart(), open(logfile, "ab") as log:
        for attempt in range(2):
            if attempt:  # package lists missing or stale: refresh once, then retry
                subprocess.run(["apt-get", "update", "-q"], stdout=log, stderr=log, env=env)
            result = subprocess.run(install, stdout=log, stderr=log, env=env)
            if result.returncode == 0:
                return
    raise ServiceError(
        f"{why}, and `apt-get install {names}` failed. Its output is in {show_path(logfile)}:\n"
        + log_tail(logfile)
    )


def run_logged(cmd: Sequence[str], *, what: str, logfile: Path, cwd: Path | None = None) -> None:
    """Run a setup command to completion, output appended to logfile; raise on failure."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        result = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    if result.returncode != 0:
        raise ServiceError(
            f"{what} failed (exit {result.returncode}). Its output is in "
            f"{show_path(logfile)}; last lines:\n" + log_tail(logfile)
        )

"""Work for an idle core over a state too big to hand to another process.

A forked copy of this process already holds the state (copy-on-write), so it
can compute from it and send back only the bytes it makes. The replay uses it
to write the venues' part of the state hash while it finishes its checks.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable

OK, FAILED = b"0", b"1"


class Forked:
    """``work()`` running in a forked copy of this process; ``result()`` waits for its
    bytes, ``stop()`` ends it unread. Without ``os.fork`` it runs in place, at once."""

    def __init__(self, work: Callable[[], bytes]) -> None:
        self._pid: int | None = None
        self._made: bytes | None = None
        if not hasattr(os, "fork"):
            self._made = work()
            return
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # the copy: compute, write, leave without any of the parent's cleanup
            os.close(reading)
            try:
                try:
                    made = OK + work()
                except BaseException:
                    made = FAILED + traceback.format_exc().encode()
                with os.fdopen(writing, "wb") as out:
                    out.write(made)
            finally:
                os._exit(0)
        os.close(writing)
        self._pid = pid
        self._reading = reading

    def result(self) -> bytes:
        if self._made is not None:
            return self._made
        with os.fdopen(self._reading, "rb") as made:
            received = made.read()
        self._wait()
        if not received.startswith(OK):
            detail = received[1:].decode(errors="replace") or "it wrote nothing"
            msg = f"the forked work failed: {detail}"
            raise RuntimeError(msg)
        self._made = received[1:]
        return self._made

    def stop(self) -> None:
        """End the work if it is still running (its result was not wanted)."""
        if self._pid is None:
            return
        os.kill(self._pid, signal.SIGKILL)
        os.close(self._reading)
        self._wait()

    def _wait(self) -> None:
        assert self._pid is not None
        os.waitpid(self._pid, 0)
        self._pid = None

"""Work in a forked copy of the process: its bytes come back, its failure is raised."""

from __future__ import annotations

import os
import time

import pytest

from infra.forked import Forked

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_the_copy_sees_the_parents_state_and_hands_back_its_bytes() -> None:
    state = {n: str(n) for n in range(100_000)}  # more than a pipe's buffer, made before
    work = Forked(lambda: "".join(state.values()).encode())
    state.clear()  # the parent's later changes are not the copy's
    made = work.result()
    assert made == "".join(str(n) for n in range(100_000)).encode()
    assert work.result() is made


def test_the_work_runs_in_another_process() -> None:
    assert Forked(lambda: str(os.getpid()).encode()).result() != str(os.getpid()).encode()


def test_a_failure_in_the_copy_is_raised_with_its_traceback() -> None:
    def broken() -> bytes:
        raise ValueError("no such venue")

    with pytest.raises(RuntimeError, match=r"(?s)forked work failed.*ValueError: no such venue"):
        Forked(broken).result()


def test_stop_ends_work_still_running() -> None:
    started = time.monotonic()
    work = Forked(lambda: time.sleep(30) or b"late")
    work.stop()
    assert time.monotonic() - started < 10
    work.stop()  # once is enough

"""Effectively-once: events are identified by (aggregate id, version).

A processor re-emits the outputs of the inputs it replays after a crash, so
every consumer sees some events twice. A second copy must be byte-identical
to the first; anything else is a fork, and a fork is an alarm.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from infra.event_records import fingerprint


class ForkedEvent(RuntimeError):
    """Two different events claim the same (aggregate id, version)."""


class SeenEvents:
    """The fingerprints of recently applied events, and each aggregate's last version."""

    def __init__(self, contiguous: bool = True, limit: int = 1_000_000) -> None:
        self.contiguous = contiguous
        self.limit = limit
        self._fingerprints: OrderedDict[tuple[UUID, int], int] = OrderedDict()
        self.versions: dict[UUID, int] = {}

    def is_new(self, aggregate_id: UUID, version: int, state: bytes) -> bool:
        """True for the next event of an aggregate; False for a verified duplicate.

        Raises ForkedEvent for a duplicate whose bytes differ, or, where every
        event of an aggregate is expected (``contiguous``), for a gap.
        """
        last = self.versions.get(aggregate_id, 0)
        if version <= last:
            known = self._fingerprints.get((aggregate_id, version))
            if known is not None and known != fingerprint(state):
                msg = f"event {aggregate_id} v{version} arrived twice with different bytes"
                raise ForkedEvent(msg)
            return False
        if self.contiguous and version != last + 1:
            msg = f"event {aggregate_id} jumped from v{last} to v{version}"
            raise ForkedEvent(msg)
        self.remember(aggregate_id, version, state)
        return True

    def remember(self, aggregate_id: UUID, version: int, state: bytes) -> None:
        self.versions[aggregate_id] = version
        self._fingerprints[aggregate_id, version] = fingerprint(state)
        if len(self._fingerprints) > self.limit:
            self._fingerprints.popitem(last=False)

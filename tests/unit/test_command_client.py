"""Commands as the gateways stamp them."""

from __future__ import annotations

import uuid

from infra.command_client import new_command_id


def test_a_command_id_is_a_random_version_4_uuid_in_hex() -> None:
    ids = [new_command_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for command_id in ids:
        parsed = uuid.UUID(command_id)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == command_id

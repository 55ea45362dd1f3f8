"""Request bodies: a JSON object, its fields read with their types checked.

Every refusal is a 400 with a stable code naming what is wrong, raised before
anything is published, so bad input changes nothing. Amounts are decimal
strings (or integers); a JSON float is refused rather than guessed at, since
its binary value is not the decimal the client meant.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

import orjson

from domain.errors import DomainError
from domain.money import parse_decimal
from infra.http import ApiError, bad_request

E = TypeVar("E", bound=StrEnum)

MAX_TEXT = 128


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise bad_request("invalid_json", "the request body must be a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request("invalid_json", f"the request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise bad_request("invalid_json", "the request body must be a JSON object")
    return body


class Body:
    """One request's fields; ``allowed`` lists every field the endpoint takes."""

    def __init__(self, fields: dict[str, Any], allowed: Iterable[str]) -> None:
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            msg = f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(allowed)}"
            raise bad_request("unknown_field", msg)
        self.fields = fields

    def _present(self, name: str, required: bool) -> Any:
        value = self.fields.get(name)
        if value is None and required:
            raise bad_request("missing_field", f"{name} is required")
        return value

    def text(self, name: str, *, required: bool = True, max_length: int = MAX_TEXT) -> str | None:
        value = self._present(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise bad_request("invalid_type", f"{name} must be a string")
        if not value or len(value) > max_length:
            msg = f"{name} must be 1 to {max_length} characters"
            raise bad_request("invalid_value", msg)
        return value

    def required_text(self, name: str, max_length: int = MAX_TEXT) -> str:
        value = self.text(name, max_length=max_length)
        assert value is not None
        return value

    def decimal(
        self, name: str, *, required: bool = False, positive: bool = True
    ) -> Decimal | None:
        value = self._present(name, required)
        if value is None:
            return None
        if isinstance(value, float):
            msg = f'{name} must be a decimal string such as "0.1", not a JSON number'
            raise bad_request("invalid_type", msg)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise bad_request("invalid_type", f"{name} must be a decimal string")
        try:
            number = parse_decimal(value, name)
        except DomainError as error:
            raise bad_request("invalid_amount", error.message) from None
        if positive and number <= 0:
            raise bad_request("invalid_amount", f"{name} must be greater than zero")
        return number

    def required_decimal(self, name: str) -> Decimal:
        value = self.decimal(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        """A required whole number in ``[low, high]`` (a JSON integer, not a string)."""
        value = self._present(name, True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request("invalid_type", f"{name} must be a whole number")
        if not low <= value <= high:
            raise bad_request("invalid_value", f"{name} must be from {low} to {high}")
        return value

    def choice(self, name: str, kind: type[E]) -> E:
        value = self.optional_choice(name, kind)
        if value is None:
            raise bad_request("missing_field", f"{name} is required")
        return value

    def optional_choice(self, name: str, kind: type[E]) -> E | None:
        value = self.fields.get(name)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            options = ", ".join(repr(member.value) for member in kind)
            raise bad_request("invalid_value", f"{name} must be one of {options}") from None

    def flag(self, name: str) -> bool:
        value = self.fields.get(name, False)
        if not isinstance(value, bool):
            raise bad_request("invalid_type", f"{name} must be true or false")
        return value

    def strings(self, name: str) -> list[str]:
        value = self._present(name, True)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad_request("invalid_type", f"{name} must be a list of strings")
        return value


def refusal(error: DomainError) -> ApiError:
    """A domain refusal found while validating a request."""
    return ApiError(400, error.code, error.message)

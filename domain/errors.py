"""Domain errors: every refusal carries a stable code and a readable message."""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses; ``code`` is stable and goes to API clients."""

    code = "domain_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidAmount(DomainError):
    code = "invalid_amount"


class InvalidOrder(DomainError):
    code = "invalid_order"


class InsufficientFunds(DomainError):
    code = "insufficient_funds"


class UnknownMarket(DomainError):
    code = "unknown_market"


class UnknownOrder(DomainError):
    code = "unknown_order"


class InvariantViolation(AssertionError):
    """The model reached a state that must be impossible: an alarm, never a 4xx."""

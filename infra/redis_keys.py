"""Every Redis key and pub/sub channel BitEx uses, in one place.

All live under one namespace, ``bitex:`` followed by the topic prefix
(``BITEX_TOPIC_PREFIX``), so two deployments, or two tests, on one Redis never
meet. Writers (projections, the command gateway) and readers (the query
gateway) build names only through this class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RedisKeys:
    namespace: str = "bitex:"

    @classmethod
    def for_prefix(cls, topic_prefix: str) -> RedisKeys:
        return cls(f"bitex:{topic_prefix}")

    # -- projection bookkeeping ------------------------------------------------

    def offsets(self, projection: str) -> str:
        """HASH ``<topic>:<partition>`` -> next offset to apply."""
        return f"{self.namespace}offsets:{projection}"

    def versions(self, projection: str) -> str:
        """HASH aggregate id -> last applied version."""
        return f"{self.namespace}versions:{projection}"

    # -- market data -----------------------------------------------------------

    def book_side(self, symbol: str, side: str) -> str:
        """HASH price -> total open quantity at that price (side is ``bids`` or ``asks``)."""
        return f"{self.namespace}book:{symbol}:{side}"

    def book_snapshot(self, symbol: str) -> str:
        """STRING: JSON ``{"symbol", "sequence", "bids", "asks"}``, the top levels."""
        return f"{self.namespace}book:{symbol}:snapshot"

    def resting_order(self, order_id: str) -> str:
        """HASH of one order on a book: side, price, remaining, account id, symbol."""
        return f"{self.namespace}resting:{order_id}"

    def ticker(self, symbol: str) -> str:
        """STRING: JSON 24h ticker, best bid and ask included."""
        return f"{self.namespace}ticker:{symbol}"

    def ticker_minutes(self, symbol: str) -> str:
        """HASH minute (epoch seconds) -> JSON OHLCV of that minute, the last 24h."""
        return f"{self.namespace}ticker-minutes:{symbol}"

    def recent_trades(self, symbol: str) -> str:
        """LIST of JSON trades, newest first, capped."""
        return f"{self.namespace}trades:{symbol}"

    # -- pub/sub channels --------------------------------------------------------

    def channel(self, stream: str) -> str:
        """A notification channel: ``book:<symbol>``, ``trades:<symbol>``,
        ``ticker:<symbol>``, ``orders:<account id>`` or ``balances:<account id>``."""
        return f"{self.namespace}ch:{stream}"

    # -- the command side's hot state ----------------------------------------

    def session(self, token_digest: str) -> str:
        """STRING: JSON of the session's user, with a TTL (the session's expiry)."""
        return f"{self.namespace}session:{token_digest}"

    def seen_signature(self, key_id: str, signature: str) -> str:
        """Set once per signed request, for longer than the signing window."""
        return f"{self.namespace}seen-signature:{key_id}:{signature}"

    def rate_limit(self, scope: str, subject: str, window: int) -> str:
        """STRING: requests counted for (scope, subject) in one second, expiring soon after."""
        before_subject, after_subject = self.rate_limit_around(scope, window)
        return f"{before_subject}{subject}{after_subject}"

    def rate_limit_around(self, scope: str, window: int) -> tuple[str, str]:
        """What a rate-limit counter's name has before and after its subject (for a Lua
        script that learns the subject itself, from the session it reads)."""
        return f"{self.namespace}rate:{scope}:", f":{window}"

"""The matching processor: one writer for the venues of one market partition.

Its single input is its partition of ``bitex.matching-commands``, written by
the account processors. It emits order events and market events, and relays
to each account's inbox the order events that account must settle.

It is the one writer of its markets' listings: a listing forwarded to it opens
the market's venue (``TradeTape.Listed``, with every rule of the market) and is
relayed to every account partition, each of which takes the market at that
point of its own inbox.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from domain.errors import DomainError
from domain.markets import Market, asset_conflicts, assets_of, market_fields, market_from_fields
from domain.orders import Order
from domain.replay import Replayer
from domain.settlement import SETTLING_EVENTS
from domain.venue import Event, TradeTape, Venue
from infra.dedupe import SeenEvents
from infra.event_records import CAUSE, cause_offset, header
from infra.messages import MalformedMessage, Outcome
from infra.serialization import EventMapper
from infra.topics import TopicMap
from streams.forwards import (
    AMEND,
    AMEND_REFUSED,
    CANCEL,
    CANCEL_ALL,
    KIND,
    LIST,
    MARKET_LISTED,
    REJECT,
    SUBMIT,
    AmendRefused,
    Forward,
    request_from_json,
)
from streams.records import InRecord, OutRecord, event_records, written_versions
from streams.snapshots import Json, venue_from_json, venue_to_json

FORWARD = "bitex-forward"
"""Header on outputs: the account-inbox position of the forward that caused them
(for tracing; a restart learns what it had seen from its inbox)."""
ACCOUNT = "bitex-account"
SYMBOL = "bitex-symbol"


class MatchingProcessor:
    """``markets`` (of any partition) are known from the start, their venues opened
    lazily (tests hold them in hand; production passes none and lists each one)."""

    def __init__(self, markets: dict[str, Market], topics: TopicMap, partition: int) -> None:
        self.topics = topics
        self.partition = partition
        self.markets = {
            symbol: market
            for symbol, market in markets.items()
            if topics.market_partition(symbol) == partition
        }
        self.mapper = EventMapper()
        self.replayer = Replayer(self.markets)
        self.venues = self.replayer.venues
        self.own_events = SeenEvents()
        self.forwards_seen: dict[int, int] = {}
        self.snapshot_due = False  # its listings are events of its own log

    # -- recovery ----------------------------------------------------------

    def restore(self, stored: StoredEvent, headers: Any) -> None:
        """Apply one of this partition's own events (market events first, then orders)."""
        aggregate_id = UUID(str(stored.originator_id))
        if not self.own_events.is_new(aggregate_id, stored.originator_version, stored.state):
            return
        self.replayer.apply(self.mapper.to_domain_event(stored))

    def snapshot(self) -> Json:
        return {
            "venues": {symbol: venue_to_json(venue) for symbol, venue in self.venues.items()},
            "forwards_seen": {str(k): v for k, v in self.forwards_seen.items()},
        }

    def load(self, state: Json) -> None:
        for symbol, data in state["venues"].items():
            venue = venue_from_json(data, self.markets.get(symbol))
            self.replayer.adopt(venue)
            self.own_events.versions[venue.tape.id] = venue.tape.version
            for order in venue.orders.values():
                self.own_events.versions[order.id] = order.version
        self.forwards_seen = {int(k): v for k, v in state["forwards_seen"].items()}

    def note_processed(self, record: InRecord) -> None:
        """Remember a forward that was processed before this restart, for deduplication."""
        source = cause_offset(record.headers)
        if source is not None:
            self._seen_forward(*source)

    # -- processing --------------------------------------------------------

    def handle(self, record: InRecord) -> list[OutRecord]:
        kind = header(record.headers, KIND)
        source = cause_offset(record.headers)
        if kind is None or source is None:
            msg = f"record {record.cause.decode()} is not a forward"
            raise MalformedMessage(msg)
        if not self._seen_forward(*source):
            return []
        forward = Forward.decode(kind, record.value)
        if forward.kind == LIST:
            return self._list(forward, record.cause, f"{source[0]}:{source[1]}".encode())
        venue = self._venue(forward.symbol, forward.at)
        refund: list[OutRecord] = []
        try:
            outcome = Outcome(forward.command_id, True, self._apply(venue, forward))
        except DomainError as refusal:
            outcome = Outcome(forward.command_id, False, code=refusal.code, message=refusal.message)
            refund = self._refund_amend(forward, record.cause)
        events = venue.collect_events()
        out = self._records(venue, events, record.cause, f"{source[0]}:{source[1]}".encode())
        if outcome.ok:
            outcome.details["fills"] = [
                _fill_details(event)
                for event in events
                if isinstance(event, TradeTape.TradeExecuted)
            ]
            outcome.details["written"] = {
                **forward.body.get("written", {}),
                **written_versions(out),
            }
        out += refund
        out.append(
            OutRecord(self.topics.outcomes, 0, outcome.command_id.encode(), outcome.encode())
        )
        return out

    def _apply(self, venue: Venue, forward: Forward) -> dict[str, Any]:
        body, at = forward.body, forward.at
        if forward.kind == SUBMIT and body.get("duplicate"):
            return _order_details(venue.owned_order(forward.account_id, UUID(body["order_id"])))
        if forward.kind in (SUBMIT, REJECT):
            request = request_from_json(body["request"])
            if request.order_id in venue.orders:
                return _order_details(venue.orders[request.order_id])
            if forward.kind == SUBMIT:
                order = venue.submit(request, int(body["funds"]), at)
            else:
                order = venue.reject(request, "insufficient_funds", at)
            return _order_details(order)
        if forward.kind == CANCEL:
            order_id = UUID(body["order_id"])
            return _order_details(
                venue.cancel(forward.account_id, order_id, "cancelled_by_user", at)
            )
        if forward.kind == CANCEL_ALL:
            cancelled = venue.cancel_all(forward.account_id, "cancelled_by_user", at)
            return {"cancelled": [str(order.id) for order in cancelled]}
        if forward.kind == AMEND:
            price = None if body["price"] is None else Decimal(body["price"])
            order = venue.amend(
                forward.account_id,
                UUID(body["order_id"]),
                price,
                Decimal(body["quantity"]),
                at,
                expected_lots=int(body["expected_lots"]),
            )
            return _order_details(order)
        msg = f"unknown forward kind {forward.kind!r}"
        raise MalformedMessage(msg)

    def _list(self, forward: Forward, cause: bytes, source: bytes) -> list[OutRecord]:
        """List a market: open its venue and tell every account partition; listing the
        same market again changes nothing, other rules under its symbol are refused."""
        market = market_from_fields(forward.body["market"])
        if self.topics.market_partition(market.symbol) != self.partition:
            msg = f"market {market.symbol} is not on matching partition {self.partition}"
            raise MalformedMessage(msg)
        known = self.markets.get(market.symbol)
        conflict = asset_conflicts(market, assets_of(self.markets))
        out: list[OutRecord] = []
        if known is not None and known != market:
            message = f"market {market.symbol} is listed already, with other rules"
            outcome = Outcome(forward.command_id, False, code="market_exists", message=message)
        elif known is None and conflict is not None:
            outcome = Outcome(
                forward.command_id, False, code="asset_scale_conflict", message=conflict
            )
        elif known is not None:
            outcome = Outcome(forward.command_id, True, {"result": "already_listed"})
        else:
            self.markets[market.symbol] = market
            venue = self.venues[market.symbol] = Venue.open(market, forward.at)
            out = self._records(venue, venue.collect_events(), cause, source)
            listing = orjson.dumps(market_fields(market), option=orjson.OPT_SORT_KEYS)
            out += [
                OutRecord(
                    self.topics.account_commands,
                    partition,
                    market.symbol.encode(),
                    listing,
                    [(KIND, MARKET_LISTED), (CAUSE, cause)],
                )
                for partition in range(self.topics.account_partitions)
            ]
            written = {**forward.body.get("written", {}), **written_versions(out)}
            outcome = Outcome(forward.command_id, True, {"result": "listed", "written": written})
        out.append(
            OutRecord(self.topics.outcomes, 0, outcome.command_id.encode(), outcome.encode())
        )
        return out

    # -- helpers -----------------------------------------------------------

    def _seen_forward(self, partition: int, offset: int) -> bool:
        """Record a forward's position; False if it was seen before (a re-emission)."""
        if offset <= self.forwards_seen.get(partition, -1):
            return False
        self.forwards_seen[partition] = offset
        return True

    def _venue(self, symbol: str, at: datetime) -> Venue:
        venue = self.venues.get(symbol)
        if venue is None:
            market = self.markets.get(symbol)
            if market is None:
                msg = f"market {symbol} is not on matching partition {self.partition}"
                raise MalformedMessage(msg)
            venue = self.venues[symbol] = Venue.open(market, at)
        return venue

    def _records(
        self, venue: Venue, events: list[Event], cause: bytes, forward: bytes
    ) -> list[OutRecord]:
        out: list[OutRecord] = []
        for event in events:
            out += self._event_records(venue, event, cause, forward)
        return out

    def _event_records(
        self, venue: Venue, event: Event, cause: bytes, forward: bytes
    ) -> list[OutRecord]:
        topics = self.topics
        topic = topics.market_events if isinstance(event, TradeTape.Event) else topics.order_events
        (record,) = event_records(self.mapper, [event], topic, self.partition, cause)
        record.headers.append((FORWARD, forward))
        self.own_events.remember(event.originator_id, event.originator_version, record.value)
        if not isinstance(event, SETTLING_EVENTS):
            return [record]
        order = venue.orders[event.originator_id]
        relay = OutRecord(
            self.topics.account_commands,
            self.topics.account_partition(order.account_id),
            str(order.account_id).encode(),
            record.value,
            [
                *record.headers,
                (ACCOUNT, str(order.account_id).encode()),
                (SYMBOL, venue.market.symbol.encode()),
            ],
        )
        return [record, relay]

    def _refund_amend(self, forward: Forward, cause: bytes) -> list[OutRecord]:
        if forward.kind != AMEND:
            return []
        units = int(forward.body.get("prelocked", 0))
        refused = AmendRefused(UUID(forward.body["order_id"]), forward.symbol, units, forward.at)
        return [
            OutRecord(
                self.topics.account_commands,
                self.topics.account_partition(forward.account_id),
                str(forward.account_id).encode(),
                refused.encode(),
                [
                    (KIND, AMEND_REFUSED),
                    (CAUSE, cause),
                    (ACCOUNT, str(forward.account_id).encode()),
                ],
            )
        ]


def _fill_details(trade: TradeTape.TradeExecuted) -> dict[str, Any]:
    """A trade as the taker's outcome tells it (fees follow at settlement)."""
    return {
        "trade_id": trade.trade_id,
        "price": format(trade.price, "f"),
        "quantity": format(trade.quantity, "f"),
        "maker_order_id": str(trade.maker_order_id),
    }


def _order_details(order: Order) -> dict[str, Any]:
    return {
        "order_id": str(order.id),
        "symbol": order.symbol,
        "status": order.status.value,
        "reason": order.reason,
        "price": None if order.price is None else format(order.price, "f"),
        "remaining": None if order.remaining is None else format(order.remaining, "f"),
        "filled_quantity": format(order.filled_quantity, "f"),
        "filled_notional": format(order.filled_notional, "f"),
    }

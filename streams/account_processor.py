"""The account processor: one writer for the accounts of one partition.

Its single input is its partition of ``bitex.account-commands``: commands from
the gateways, and what the matching side relays back (order events to settle,
refused amends, listed markets). A single input makes its output a function of
that input and its own prior state, so replaying an input after a crash
re-emits the very same bytes. A market is known from the point of the inbox
where its listing arrives: an order before it is refused as an unknown market.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from domain.accounts import Account
from domain.aggregates import account_id_for, order_id_for
from domain.errors import DomainError, UnknownOrder
from domain.exchange import UnknownAccount
from domain.markets import (
    FeeRate,
    Market,
    asset_conflicts,
    assets_of,
    market_fields,
    market_from_fields,
)
from domain.matching import SelfTradePrevention, Side, TimeInForce
from domain.money import Asset, parse_decimal
from domain.orders import OrderType, validate_order
from domain.settlement import (
    lock_for_order,
    prelock_for_amend,
    remaining_lots,
    settle_order_event,
    undo_prelock,
)
from domain.users import USER_EVENTS, EmailTaken, User, api_key_id_for, user_id_for
from infra import messages
from infra.dedupe import SeenEvents
from infra.event_records import cause_offset, header, stored_event
from infra.messages import Command, MalformedMessage, Outcome
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
    request_to_json,
)
from streams.records import InRecord, OutRecord, event_records, written_versions
from streams.snapshots import (
    Json,
    account_from_json,
    account_to_json,
    user_from_json,
    user_to_json,
)

log = logging.getLogger(__name__)


class AccountProcessor:
    """``markets`` are known from the start (tests hold them in hand; production
    passes none): every other market is taken from its listing relay."""

    def __init__(self, markets: dict[str, Market], topics: TopicMap, partition: int) -> None:
        self.markets = dict(markets)
        self.topics = topics
        self.partition = partition
        self.assets = assets_of(markets)
        self.accounts: dict[UUID, Account] = {}
        self.users: dict[UUID, User] = {}
        self.mapper = EventMapper()
        self.own_events = SeenEvents()
        self.relayed = SeenEvents(contiguous=False)
        self.refusals_seen: dict[int, int] = {}
        self.snapshot_due = False
        self._handlers: dict[str, Callable[[Command], tuple[str | None, Forward | None]]] = {
            messages.OPEN_ACCOUNT: self._open_account,
            messages.DEPOSIT: self._deposit,
            messages.WITHDRAW: self._withdraw,
            messages.SET_FEE_RATES: self._set_fee_rates,
            messages.PLACE_ORDER: self._place_order,
            messages.CANCEL_ORDER: self._cancel_order,
            messages.CANCEL_ALL: self._cancel_all,
            messages.AMEND_ORDER: self._amend_order,
            messages.REGISTER_USER: self._register_user,
            messages.CREATE_API_KEY: self._create_api_key,
            messages.REVOKE_API_KEY: self._revoke_api_key,
            messages.LIST_MARKET: self._list_market,
        }

    # -- recovery ----------------------------------------------------------

    def restore(self, stored: StoredEvent, headers: Any) -> None:
        """Apply one of this partition's own account events, read back from Kafka."""
        aggregate_id = UUID(str(stored.originator_id))
        if not self.own_events.is_new(aggregate_id, stored.originator_version, stored.state):
            return
        event = self.mapper.to_domain_event(stored)
        if isinstance(event, User.Registered):
            self.users[event.originator_id] = cast(User, event.mutate(None))
        elif isinstance(event, USER_EVENTS):
            event.mutate(self.users[event.originator_id])
        elif isinstance(event, Account.Opened):
            self.accounts[event.originator_id] = cast(Account, event.mutate(None))
        else:
            event.mutate(self.accounts[event.originator_id])

    def snapshot(self) -> Json:
        return {
            "accounts": [account_to_json(account) for account in self.accounts.values()],
            "users": [user_to_json(user) for user in self.users.values()],
            "relayed": {str(k): v for k, v in self.relayed.versions.items()},
            "refusals_seen": {str(k): v for k, v in self.refusals_seen.items()},
            "markets": [market_fields(self.markets[symbol]) for symbol in sorted(self.markets)],
        }

    def load(self, state: Json) -> None:
        for data in state["accounts"]:
            account = account_from_json(data)
            self.accounts[account.id] = account
            self.own_events.versions[account.id] = account.version
        for data in state.get("users", ()):
            user = user_from_json(data)
            self.users[user.id] = user
            self.own_events.versions[user.id] = user.version
        self.relayed.versions = {UUID(k): v for k, v in state["relayed"].items()}
        self.refusals_seen = {int(k): v for k, v in state["refusals_seen"].items()}
        for fields in state.get("markets", ()):
            self._take_market(market_from_fields(fields))

    def note_processed(self, record: InRecord) -> None:
        """Remember an input that was processed before this restart, for deduplication."""
        stored = stored_event(record.value, record.headers)
        if stored is not None:
            order_id = UUID(str(stored.originator_id))
            self.relayed.is_new(order_id, stored.originator_version, stored.state)
        elif header(record.headers, KIND) == AMEND_REFUSED:
            self._first_refusal(record)
        elif header(record.headers, KIND) == MARKET_LISTED:
            self._market_listed(record)

    # -- processing --------------------------------------------------------

    def handle(self, record: InRecord) -> list[OutRecord]:
        stored = stored_event(record.value, record.headers)
        if stored is not None:
            return self._settle(record, stored)
        kind = header(record.headers, KIND)
        if kind == AMEND_REFUSED:
            return self._undo_amend(record)
        if kind == MARKET_LISTED:
            # Only this relay, in an inbox that expires, tells the partition of the
            # market: a snapshot keeps it for good.
            self._market_listed(record)
            self.snapshot_due = True
            return []
        try:
            command = Command.decode(record.value)
        except MalformedMessage as error:
            log.error("skipping malformed record %s: %s", record.cause.decode(), error)
            return []
        try:
            self._check_partition(command.account_id)
            details, forward = self._handlers[command.kind](command)
        except DomainError as refusal:
            for aggregate in self._touched(command):
                if aggregate.pending_events:
                    msg = f"{aggregate.id} changed before refusing {command.command_id}"
                    raise AssertionError(msg) from refusal
            outcome = Outcome(command.command_id, False, code=refusal.code, message=refusal.message)
            return [self._outcome(outcome)]
        out: list[OutRecord] = []
        for aggregate in self._touched(command):
            out += self._collect(aggregate, record.cause)
        written = written_versions(out)
        if forward is not None:
            if written:
                forward.body["written"] = written
            out.append(self._forward(forward, record.cause))
        else:
            result = {"result": details, "written": written}
            out.append(self._outcome(Outcome(command.command_id, True, result)))
        return out

    def _touched(self, command: Command) -> list[User | Account]:
        """What a command may change: its account, and the user named, if any."""
        touched: list[User | Account] = []
        user_id = command.fields.get("user_id")
        if user_id is not None:
            user = self.users.get(UUID(str(user_id)))
            if user is not None:
                touched.append(user)
        account = self.accounts.get(command.account_id)
        if account is not None:
            touched.append(account)
        return touched

    # -- commands ----------------------------------------------------------

    def _open_account(self, command: Command) -> tuple[str | None, Forward | None]:
        owner = str(command.fields["owner"])
        if account_id_for(owner) != command.account_id:
            msg = f"account id {command.account_id} does not belong to {owner!r}"
            raise DomainError(msg, "invalid_account")
        if command.account_id not in self.accounts:
            self.accounts[command.account_id] = Account.open(owner, command.at)
            return "opened", None
        return "already_open", None

    def _register_user(self, command: Command) -> tuple[str | None, Forward | None]:
        f = command.fields
        user_id = user_id_for(str(f["email"]))
        if str(user_id) != str(f["user_id"]):
            msg = f"user id {f['user_id']} does not belong to {f['email']!r}"
            raise DomainError(msg, "invalid_user")
        if user_id in self.users:
            msg = "a user with this e-mail address exists already"
            raise EmailTaken(msg)
        user = User.register(str(f["email"]), str(f["password_hash"]), str(f["role"]), command.at)
        if user.account_id != command.account_id:
            msg = f"account id {command.account_id} does not belong to user {user_id}"
            raise DomainError(msg, "invalid_account")
        self.users[user_id] = user
        if user.account_id not in self.accounts:
            self.accounts[user.account_id] = Account.open(str(user_id), command.at)
        return "registered", None

    def _create_api_key(self, command: Command) -> tuple[str | None, Forward | None]:
        user = self._user(command)
        key_id = api_key_id_for(user.id, command.command_id)
        f = command.fields
        user.create_api_key(key_id, f["permissions"], str(f.get("label", "")), command.at)
        return key_id, None

    def _revoke_api_key(self, command: Command) -> tuple[str | None, Forward | None]:
        revoked = self._user(command).revoke_api_key(str(command.fields["key_id"]), command.at)
        return ("revoked" if revoked else "already_revoked"), None

    def _deposit(self, command: Command) -> tuple[str | None, Forward | None]:
        asset, amount = self._asset_amount(command)
        done = self._account(command).deposit(
            asset, amount, str(command.fields["tx_id"]), command.at
        )
        return ("credited" if done else "duplicate"), None

    def _withdraw(self, command: Command) -> tuple[str | None, Forward | None]:
        asset, amount = self._asset_amount(command)
        withdrawal_id = str(command.fields.get("withdrawal_id") or command.command_id)
        done = self._account(command).withdraw(asset, amount, withdrawal_id, command.at)
        return ("debited" if done else "duplicate"), None

    def _set_fee_rates(self, command: Command) -> tuple[str | None, Forward | None]:
        market = self._market(command.fields["symbol"])
        maker = FeeRate(parse_decimal(command.fields["maker"], "maker"))
        taker = FeeRate(parse_decimal(command.fields["taker"], "taker"))
        self._account(command).set_fee_rates(market, maker, taker, command.at)
        return "set", None

    def _place_order(self, command: Command) -> tuple[str | None, Forward | None]:
        account = self._account(command)
        f = command.fields
        market = self._market(f["symbol"])
        order_id = order_id_for(account.id, f.get("client_order_id"), command.command_id)
        if order_id in account.order_ids:
            # A resubmission: the matching side answers with the order as it stands.
            body = {"order_id": str(order_id), "duplicate": True}
            return None, Forward(
                SUBMIT, command.command_id, command.at, account.id, market.symbol, body
            )
        request = validate_order(
            market,
            order_id=order_id,
            account_id=account.id,
            side=Side(f["side"]),
            type=OrderType(f["type"]),
            price=_optional_decimal(f.get("price"), "price"),
            quantity=_optional_decimal(f.get("quantity"), "quantity"),
            quote_quantity=_optional_decimal(f.get("quote_quantity"), "quote_quantity"),
            time_in_force=TimeInForce(f["time_in_force"]) if f.get("time_in_force") else None,
            post_only=bool(f.get("post_only", False)),
            stp=SelfTradePrevention(f.get("stp") or SelfTradePrevention.CANCEL_TAKER),
            client_order_id=f.get("client_order_id"),
        )
        funds = lock_for_order(account, market, request, command.at)
        body = {"request": request_to_json(request), "funds": funds}
        kind = SUBMIT if funds else REJECT
        return None, Forward(kind, command.command_id, command.at, account.id, market.symbol, body)

    def _cancel_order(self, command: Command) -> tuple[str | None, Forward | None]:
        account = self._account(command)
        order_id = UUID(str(command.fields["order_id"]))
        reservation = self._open_reservation(account, order_id)
        body = {"order_id": str(order_id)}
        return None, Forward(
            CANCEL, command.command_id, command.at, account.id, reservation.symbol, body
        )

    def _cancel_all(self, command: Command) -> tuple[str | None, Forward | None]:
        account = self._account(command)
        market = self._market(command.fields["symbol"])
        return None, Forward(
            CANCEL_ALL, command.command_id, command.at, account.id, market.symbol, {}
        )

    def _amend_order(self, command: Command) -> tuple[str | None, Forward | None]:
        account = self._account(command)
        f = command.fields
        order_id = UUID(str(f["order_id"]))
        reservation = self._open_reservation(account, order_id)
        market = self.markets[reservation.symbol]
        price = _optional_decimal(f.get("price"), "price")
        quantity = _optional_decimal(f.get("quantity"), "quantity")
        if quantity is None:
            msg = "an amend needs the new quantity"
            raise DomainError(msg, "missing_field")
        expected_lots = remaining_lots(account, market, order_id)
        prelocked = prelock_for_amend(account, market, order_id, price, quantity, command.at)
        body = {
            "expected_lots": expected_lots,
            "order_id": str(order_id),
            "price": None if price is None else format(price, "f"),
            "quantity": format(quantity, "f"),
            "prelocked": prelocked,
        }
        return None, Forward(AMEND, command.command_id, command.at, account.id, market.symbol, body)

    def _list_market(self, command: Command) -> tuple[str | None, Forward | None]:
        """Check a listing against what this partition knows, and send it to its market's
        matching processor (the one writer of that market, which decides)."""
        try:
            market = market_from_fields(command.fields)
        except ValueError as error:
            raise DomainError(str(error), "invalid_market") from None
        known = self.markets.get(market.symbol)
        if known is not None:
            if known != market:
                msg = f"market {market.symbol} is listed already, with other rules"
                raise DomainError(msg, "market_exists")
            return "already_listed", None
        conflict = asset_conflicts(market, self.assets)
        if conflict is not None:
            raise DomainError(conflict, "asset_scale_conflict")
        body: dict[str, Any] = {"market": market_fields(market)}
        return None, Forward(
            LIST, command.command_id, command.at, command.account_id, market.symbol, body
        )

    # -- relays from the matching side --------------------------------------

    def _market_listed(self, record: InRecord) -> None:
        """Take a market its matching processor listed, from this point of the inbox on."""
        try:
            market = market_from_fields(orjson.loads(record.value))
        except (orjson.JSONDecodeError, ValueError) as error:
            msg = f"malformed listing {record.cause.decode()}: {error}"
            raise MalformedMessage(msg) from None
        self._take_market(market)

    def _take_market(self, market: Market) -> None:
        known = self.markets.get(market.symbol)
        if known == market:
            return  # a relay taken again (after a restart), or a market held from the start
        problem = (
            f"another {market.symbol} is known" if known else asset_conflicts(market, self.assets)
        )
        if problem is not None:
            # Two matching processors listed conflicting markets at once (the gateway
            # checks first, so only a race gets here): keep the first, raise the alarm.
            log.error("partition %d refuses listing %s: %s", self.partition, market, problem)
            return
        self.markets[market.symbol] = market
        self.assets.update(assets_of({market.symbol: market}))

    def _settle(self, record: InRecord, stored: StoredEvent) -> list[OutRecord]:
        order_id = UUID(str(stored.originator_id))
        if not self.relayed.is_new(order_id, stored.originator_version, stored.state):
            return []
        event = self.mapper.to_domain_event(stored)
        symbol = header(record.headers, "bitex-symbol")
        account_id = header(record.headers, "bitex-account")
        if symbol is None or account_id is None:
            msg = f"relayed event {order_id} v{stored.originator_version} lacks its routing"
            raise MalformedMessage(msg)
        account = self.accounts[UUID(account_id.decode())]
        settle_order_event(account, self.markets[symbol.decode()], event)
        return self._collect(account, record.cause)

    def _undo_amend(self, record: InRecord) -> list[OutRecord]:
        if not self._first_refusal(record):
            return []
        refused = AmendRefused.decode(record.value)
        account_id = header(record.headers, "bitex-account")
        assert account_id is not None
        account = self.accounts[UUID(account_id.decode())]
        undo_prelock(
            account, self.markets[refused.symbol], refused.order_id, refused.units, refused.at
        )
        return self._collect(account, record.cause)

    def _first_refusal(self, record: InRecord) -> bool:
        """Record a refused-amend relay; False if this one was seen before."""
        source = cause_offset(record.headers)
        if source is None:
            msg = "a relay must name its cause"
            raise MalformedMessage(msg)
        matching_partition, matching_offset = source
        if matching_offset <= self.refusals_seen.get(matching_partition, -1):
            return False
        self.refusals_seen[matching_partition] = matching_offset
        return True

    # -- helpers -----------------------------------------------------------

    def _collect(self, aggregate: User | Account | None, cause: bytes) -> list[OutRecord]:
        """An aggregate's new events as records on its partition of the user events."""
        if aggregate is None:
            return []
        pending = aggregate.collect_events()
        records = event_records(
            self.mapper, pending, self.topics.user_events, self.partition, cause
        )
        for record, event in zip(records, pending, strict=True):
            self.own_events.remember(event.originator_id, event.originator_version, record.value)
        return records

    def _forward(self, forward: Forward, cause: bytes) -> OutRecord:
        partition = self.topics.market_partition(forward.symbol)
        headers = [(KIND, forward.kind), ("bitex-cause", cause)]
        return OutRecord(
            self.topics.matching_commands,
            partition,
            forward.symbol.encode(),
            forward.encode(),
            headers,
        )

    def _outcome(self, outcome: Outcome) -> OutRecord:
        return OutRecord(self.topics.outcomes, 0, outcome.command_id.encode(), outcome.encode())

    def _check_partition(self, account_id: UUID) -> None:
        expected = self.topics.account_partition(account_id)
        if expected != self.partition:
            msg = f"account {account_id} belongs to partition {expected}, not {self.partition}"
            raise DomainError(msg, "misrouted")

    def _user(self, command: Command) -> User:
        user = self.users.get(UUID(str(command.fields["user_id"])))
        if user is None or user.account_id != command.account_id:
            msg = f"unknown user {command.fields['user_id']}"
            raise DomainError(msg, "unknown_user")
        return user

    def _account(self, command: Command) -> Account:
        account = self.accounts.get(command.account_id)
        if account is None:
            msg = f"unknown account {command.account_id}"
            raise UnknownAccount(msg)
        return account

    def _market(self, symbol: object) -> Market:
        market = self.markets.get(str(symbol))
        if market is None:
            msg = f"unknown market {symbol!r}"
            raise DomainError(msg, "unknown_market")
        return market

    def _asset_amount(self, command: Command) -> tuple[Asset, Decimal]:
        code = str(command.fields["asset"])
        asset = self.assets.get(code)
        if asset is None:
            msg = f"unknown asset {code!r}"
            raise DomainError(msg, "unknown_asset")
        return asset, parse_decimal(command.fields["amount"], "amount")

    @staticmethod
    def _open_reservation(account: Account, order_id: UUID) -> Any:
        reservation = account.reservations.get(order_id)
        if reservation is None:
            if order_id not in account.order_ids:  # never this account's: it is not told more
                msg = f"no order {order_id}"
                raise UnknownOrder(msg, "order_not_found")
            msg = f"order {order_id} is not open any more"
            raise UnknownOrder(msg, "order_not_open")
        return reservation


def _optional_decimal(value: object, what: str) -> Decimal | None:
    return None if value is None else parse_decimal(value, what)

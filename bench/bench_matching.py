"""Benchmark of the matching engine, alone and with events, against a naive book.

Run it with ``make bench-matching`` (or ``python -m bench.bench_matching`` or
``python bench/bench_matching.py`` from the repository root). The last line
is ``BENCH matching <ops/s> ops/s``.

The workload is modelled on exchange-core's order book benchmark: 1,000
accounts and about 1,000 resting orders over about 750 price levels around a
mid price (new orders rest an exponentially distributed distance from it,
500 ticks on average), then a stream of about 9% GTC, 3% IOC, 6% cancel and
82% amend. An amend is a move of the order's price, a pull towards the mid
plus a few ticks of noise; 2% of moves chase the other side through its touch
and trade; one amend in ten reduces the quantity at the same price instead
(which keeps priority). IOC orders go a few ticks through the touch.

How the operations stay valid: as exchange-core does, the generator simulates
the book while it generates (with the naive reference book of
``bench.naive_book``), so every cancel or amend names an order that is still
live at that point, and no operation is a no-op. The whole list is built
before any timing starts, and both engines run exactly the same list from the
same initial book. The generator keeps about 1,000 orders live: below the
target a cancel becomes a GTC, above it a GTC becomes a cancel (the mix
printed is the one actually run). The fills the engine produces (count, lots,
and a digest of every maker, price, quantity and maker remainder, in order)
must equal the naive book's, or the benchmark fails; so must the number of
trades when a prefix of the list runs through the whole ``Exchange``.

Timing: three rounds, each running the engine on the whole list and the naive
book on its first 250,000 operations, interleaved in 10,000-operation chunks;
ops/s is taken from each chunk's median time over the rounds, so a burst of
noise from another process in one round is left out, and both engines see
the same machine. Latency percentiles come from separate passes timing each
operation with ``time.perf_counter_ns`` (the median over the rounds of each
percentile). Both engines run through the same loop, and that loop also runs
on a book whose methods do nothing, to print what the loop itself costs per
operation (it is part of both engines' figures). Everything runs with the
garbage collector enabled, after ``gc.freeze()`` has moved the pre-built
workload out of its reach.
BENCH_MATCHING_OPS, BENCH_MATCHING_NAIVE_OPS and BENCH_MATCHING_EVENT_OPS in
the environment change the sizes.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/bench_matching.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.naive_book import NaiveBook, NaiveFill
from domain.aggregates import order_id_for
from domain.exchange import Exchange
from domain.markets import demo_markets
from domain.matching import Execution, OrderBook, Side, TimeInForce
from domain.orders import OrderType
from infra.serialization import EventMapper

# -- the workload ----------------------------------------------------------

GTC, IOC, CANCEL, MOVE, REDUCE = range(5)
KIND_NAMES = {GTC: "GTC", IOC: "IOC", CANCEL: "cancel", MOVE: "move", REDUCE: "reduce"}

# (kind, order id, account, side, price in ticks, lots). For a cancel only the
# order id matters; for an amend (MOVE or REDUCE) price and lots are the new ones.
Op = tuple[int, int, int, Side, int, int]

MID = 3_000_000  # ticks: 30,000.00 USDT on BTC-USDT, so one lot is above min notional
ACCOUNTS = 1_000
LIVE_TARGET = 1_000
LIVE_SLACK = 25
DEPTH = 500  # mean distance of a new order from the mid, in ticks (exponential)
MAX_LOTS = 100  # a GTC order is for 1-100 lots
IOC_LOTS = 20  # an IOC order is for 1-20 lots, a few ticks through the touch
PULL = 0.05  # a move closes this share of the distance to the mid, plus NOISE
NOISE = (-4, -3, -2, -1, 1, 2, 3, 4)
CROSS = 0.02  # the share of moves that chase the other side through its touch


@dataclass
class Workload:
    initial: list[Op]
    ops: list[Op]
    fills: int = 0  # what the naive book did while the list was generated
    filled_lots: int = 0
    digest: int = 0
    mix: Counter[int] = field(default_factory=Counter)
    trading: Counter[int] = field(default_factory=Counter)  # operations that traded
    levels: list[int] = field(default_factory=list)  # price levels, sampled
    live: list[int] = field(default_factory=list)  # live orders, sampled


class FillTally:
    """Count, lots and an order-sensitive digest of a sequence of fills."""

    def __init__(self) -> None:
        self.fills = 0
        self.lots = 0
        self.digest = 0

    def add(self, maker_id: int, price: int, lots: int, maker_remaining: int) -> None:
        self.fills += 1
        self.lots += lots
        self.digest = (self.digest * 1_000_003 + hash((maker_id, price, lots, maker_remaining))) & (
            (1 << 61) - 1
        )


def generate(n_ops: int, seed: int = 20240601) -> Workload:
    """The initial book and ``n_ops`` operations, simulated on the naive book."""
    rng = random.Random(seed)
    book = NaiveBook()
    live: list[int] = []  # live order ids, for a uniform random pick
    where: dict[int, int] = {}
    tally = FillTally()

    def add(order_id: int) -> None:
        where[order_id] = len(live)
        live.append(order_id)

    def drop(order_id: int) -> None:
        index = where.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[index] = last
            where[last] = index

    def settle(order_id: int, fills: Sequence[NaiveFill] | None) -> None:
        for maker_id, price, lots, maker_remaining in fills or ():
            tally.add(maker_id, price, lots, maker_remaining)
            if maker_remaining == 0:
                drop(maker_id)
        resting = order_id in book.orders
        if resting and order_id not in where:
            add(order_id)
        elif not resting and order_id in where:
            drop(order_id)

    def limit_price(side: Side, offset: int) -> int:
        return MID - 1 - offset if side is Side.BUY else MID + 1 + offset

    def distance() -> int:  # how far from the mid a new order rests
        return int(rng.expovariate(1 / DEPTH))

    next_id = 1
    initial: list[Op] = []
    for _ in range(LIVE_TARGET):
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        op = (
            GTC,
            next_id,
            rng.randint(1, ACCOUNTS),
            side,
            limit_price(side, distance()),
            rng.randint(1, MAX_LOTS),
        )
        initial.append(op)
        settle(next_id, book.place(*op[1:]))
        next_id += 1

    work = Workload(initial, [])
    ops = work.ops
    for step in range(n_ops):
        draw = rng.random()
        kind = GTC if draw < 0.09 else IOC if draw < 0.12 else CANCEL if draw < 0.18 else MOVE
        if kind == CANCEL and len(live) < LIVE_TARGET - LIVE_SLACK:
            kind = GTC
        elif kind == GTC and len(live) > LIVE_TARGET + LIVE_SLACK:
            kind = CANCEL
        fills: list[NaiveFill] | None
        if kind in (GTC, IOC):
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            if kind == GTC:
                price = limit_price(side, distance() - 2)
                lots = rng.randint(1, MAX_LOTS)
            else:  # a taker a few ticks through the touch
                touch = book.best_ask() if side is Side.BUY else book.best_bid()
                through = rng.randint(0, 5)
                if touch is None:
                    touch = MID
                price = touch + through if side is Side.BUY else touch - through
                lots = rng.randint(1, IOC_LOTS)
            op = (kind, next_id, rng.randint(1, ACCOUNTS), side, price, lots)
            next_id += 1
            fills = book.place(*op[1:], ioc=kind == IOC)
        else:
            order = book.orders[live[rng.randrange(len(live))]]
            if kind == CANCEL:
                op = (CANCEL, order.order_id, order.account, order.side, order.price, 0)
                book.cancel(order.order_id)
                fills = None
            else:
                if order.remaining > 1 and rng.random() < 0.1:
                    kind = REDUCE
                    price, lots = order.price, rng.randint(1, order.remaining - 1)
                else:
                    buying = order.side is Side.BUY
                    touch = book.best_ask() if buying else book.best_bid()
                    if touch is not None and rng.random() < CROSS:
                        # Chase the other side: through its touch by a few ticks.
                        through = rng.randint(0, 3)
                        price = touch + through if buying else touch - through
                    else:
                        # A pull towards the mid plus a few ticks of noise.
                        pull = round((MID - order.price) * PULL)
                        price = order.price + pull + rng.choice(NOISE)
                    if price == order.price:
                        price += 1 if buying else -1
                    lots = order.remaining
                op = (kind, order.order_id, order.account, order.side, price, lots)
                fills = book.amend(order.order_id, price, lots)
        ops.append(op)
        work.mix[kind] += 1
        if fills:
            work.trading[kind] += 1
        settle(op[1], fills)
        if step % 1000 == 0:
            work.levels.append(len({o.price for o in book.orders.values()}))
            work.live.append(len(live))
    work.fills, work.filled_lots, work.digest = tally.fills, tally.lots, tally.digest
    return work


# -- running the list on each engine -----------------------------------------


def engine_book(initial: Sequence[Op]) -> OrderBook:
    book = OrderBook()
    for _, order_id, account, side, price, lots in initial:
        book.place(order_id, account, side, price, lots)
    return book


def naive_book(initial: Sequence[Op]) -> NaiveBook:
    book = NaiveBook()
    for _, order_id, account, side, price, lots in initial:
        book.place(order_id, account, side, price, lots)
    return book


def run_engine(book: OrderBook, ops: Sequence[Op]) -> None:
    place, cancel, amend = book.place, book.cancel, book.amend
    ioc = TimeInForce.IOC
    for kind, order_id, account, side, price, lots in ops:
        if kind >= MOVE:
            amend(order_id, price, lots)
        elif kind == GTC:
            place(order_id, account, side, price, lots)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            place(order_id, account, side, price, lots, None, ioc)


def time_engine(book: OrderBook, ops: Sequence[Op]) -> list[int]:
    """The same loop as ``run_engine``, timing each operation (ns)."""
    place, cancel, amend = book.place, book.cancel, book.amend
    ioc = TimeInForce.IOC
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    for kind, order_id, account, side, price, lots in ops:
        start = clock()
        if kind >= MOVE:
            amend(order_id, price, lots)
        elif kind == GTC:
            place(order_id, account, side, price, lots)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            place(order_id, account, side, price, lots, None, ioc)
        record(clock() - start)
    return latencies


def check_engine(book: OrderBook, ops: Sequence[Op]) -> FillTally:
    tally = FillTally()
    for kind, order_id, account, side, price, lots in ops:
        execution: Execution | None
        if kind >= MOVE:
            execution = book.amend(order_id, price, lots)
        elif kind == CANCEL:
            book.cancel(order_id)
            execution = None
        else:
            tif = TimeInForce.GTC if kind == GTC else TimeInForce.IOC
            execution = book.place(order_id, account, side, price, lots, None, tif)
        for fill in execution.fills if execution else ():
            tally.add(fill.maker_id, fill.price, fill.lots, fill.maker_remaining)  # type: ignore[arg-type]
    return tally


def run_naive(book: NaiveBook, ops: Sequence[Op]) -> None:
    place, cancel, amend = book.place, book.cancel, book.amend
    for kind, order_id, account, side, price, lots in ops:
        if kind >= MOVE:
            amend(order_id, price, lots)
        elif kind == GTC:
            place(order_id, account, side, price, lots)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            place(order_id, account, side, price, lots, True)


def time_naive(book: NaiveBook, ops: Sequence[Op]) -> list[int]:
    place, cancel, amend = book.place, book.cancel, book.amend
    clock = time.perf_counter_ns
    latencies: list[int] = []
    record = latencies.append
    for kind, order_id, account, side, price, lots in ops:
        start = clock()
        if kind >= MOVE:
            amend(order_id, price, lots)
        elif kind == GTC:
            place(order_id, account, side, price, lots)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            place(order_id, account, side, price, lots, True)
        record(clock() - start)
    return latencies


class NullBook:
    """The same methods as the books, doing nothing: what the harness's loop
    (unpacking each operation, dispatching on its kind, the call) costs alone."""

    def place(self, *args: object) -> None:
        pass

    def cancel(self, order_id: int) -> None:
        pass

    def amend(self, order_id: int, price: int, lots: int) -> None:
        pass


# -- measuring -----------------------------------------------------------------

ROUNDS = 3


def percentile(sorted_ns: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in µs."""
    index = min(len(sorted_ns) - 1, max(0, round(fraction * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1000


CHUNK = 10_000


def chunk_times(
    initial: Sequence[Op], ops: Sequence[Op], naive_ops: int
) -> tuple[list[float], list[float], list[float]]:
    """Seconds per chunk of ``CHUNK`` operations, the median over ``ROUNDS`` rounds,
    for the engine (every operation) and the naive book (the first ``naive_ops``),
    plus the engine's ops/s in each round.

    Each round starts both books afresh and runs them chunk by chunk in turn, so
    that both see the same machine: a burst of noise from another process lands
    on a chunk or two of one round, and the median leaves it out.
    """
    chunks = [ops[start : start + CHUNK] for start in range(0, len(ops), CHUNK)]
    naive_chunks = -(-naive_ops // CHUNK)
    engine: list[list[float]] = [[] for _ in chunks]
    naive: list[list[float]] = [[] for _ in chunks[:naive_chunks]]
    rates = []
    clock = time.perf_counter
    for _ in range(ROUNDS):
        engine_book_, naive_book_ = engine_book(initial), naive_book(initial)
        for index, chunk in enumerate(chunks):
            start = clock()
            run_engine(engine_book_, chunk)
            engine[index].append(clock() - start)
            if index < naive_chunks:
                start = clock()
                run_naive(naive_book_, chunk)
                naive[index].append(clock() - start)
        rates.append(len(ops) / sum(times[-1] for times in engine))
    return [median(times) for times in engine], [median(times) for times in naive], rates


def latency(
    book: Any, timed: Callable[[Any, Sequence[Op]], list[int]], ops: Sequence[Op]
) -> tuple[float, float, float]:
    """p50, p99 and p99.9 per-operation latency in µs."""
    latencies = sorted(timed(book, ops))
    return percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 0.999)


@dataclass
class Runs:
    """One engine's figures: ops/s from the chunk medians, latency percentiles
    (each the median over the rounds)."""

    ops: int
    rate: float = 0.0
    rates: list[float] = field(default_factory=list)  # each round's, for the spread
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p999: list[float] = field(default_factory=list)

    def line(self, name: str) -> str:
        spread = ""
        if self.rates:
            spread = f" (whole rounds {min(self.rates):,.0f}-{max(self.rates):,.0f})"
        return (
            f"{name}: {self.ops:,} ops, {self.rate:,.0f} ops/s{spread}; latency "
            f"p50 {median(self.p50):.1f} µs, p99 {median(self.p99):.1f} µs, "
            f"p99.9 {median(self.p999):.1f} µs"
        )


# -- the same operations through the whole exchange, with events ------------


def naive_fills(work: Workload, n_ops: int) -> int:
    """Trades the naive book makes on the initial book and the first ``n_ops``."""
    book = naive_book(work.initial)
    fills = 0
    for kind, order_id, account, side, price, lots in work.ops[:n_ops]:
        if kind >= MOVE:
            fills += len(book.amend(order_id, price, lots) or ())
        elif kind == CANCEL:
            book.cancel(order_id)
        else:
            fills += len(book.place(order_id, account, side, price, lots, kind == IOC))
    return fills


def exchange_with_events(work: Workload, n_ops: int) -> tuple[int, int, float, int, float]:
    """Run the initial book and ``n_ops`` operations through ``Exchange``,
    serializing every event; returns (ops, events, seconds, trades, serialize share)."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    exchange = Exchange(demo_markets(), at)
    market = exchange.market("BTC-USDT")
    tick, lot = market.tick_size, market.lot_size
    accounts = {}
    for number in range(1, ACCOUNTS + 1):
        account = exchange.open_account(f"bench-{number}", at)
        exchange.deposit(account.id, "USDT", Decimal(10_000_000), f"usdt-{number}", at)
        exchange.deposit(account.id, "BTC", Decimal(1_000), f"btc-{number}", at)
        accounts[number] = account.id
    exchange.collect_events()
    order_ids = {}
    commands: list[tuple[int, Any, Any, str, Side, Decimal, Decimal]] = []
    for kind, order_id, account_no, side, price, lots in (*work.initial, *work.ops[:n_ops]):
        account_id = accounts[account_no]
        command_id = str(order_id)
        if kind in (GTC, IOC):
            order_ids[order_id] = order_id_for(account_id, None, command_id)
        commands.append(
            (
                kind,
                account_id,
                order_ids[order_id],
                command_id,
                side,
                price * tick,
                lots * lot,
            )
        )
    initial, timed = commands[: len(work.initial)], commands[len(work.initial) :]
    mapper = EventMapper()
    serialize = mapper.to_stored_event

    events: list[Any] = []
    stored: list[Any] = []

    def run(batch: Sequence[tuple[int, Any, Any, str, Side, Decimal, Decimal]]) -> None:
        for kind, account_id, order_id, command_id, side, price, quantity in batch:
            if kind in (GTC, IOC):
                exchange.place(
                    account_id,
                    command_id,
                    at,
                    symbol="BTC-USDT",
                    side=side,
                    type=OrderType.LIMIT,
                    price=price,
                    quantity=quantity,
                    time_in_force=TimeInForce.GTC if kind == GTC else TimeInForce.IOC,
                )
            elif kind == CANCEL:
                exchange.cancel(account_id, order_id, at)
            else:
                exchange.amend(account_id, order_id, at, price=price, quantity=quantity)
            for event in exchange.collect_events():
                events.append(event)
                stored.append(serialize(event))

    run(initial)
    events.clear()
    stored.clear()
    start = time.perf_counter()
    run(timed)
    seconds = time.perf_counter() - start
    trades = sum(1 for event in stored if event.topic == "bitex.market.TradeExecuted")
    # The serialization share: the same events serialized again, on their own.
    start = time.perf_counter()
    for event in events:
        serialize(event)
    serializing = time.perf_counter() - start
    return len(timed), len(stored), seconds, trades, serializing / seconds


# -- the report ------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


def main() -> None:
    n_ops = int(os.environ.get("BENCH_MATCHING_OPS", "1000000"))
    n_naive = min(n_ops, int(os.environ.get("BENCH_MATCHING_NAIVE_OPS", "250000")))
    n_events = min(n_ops, int(os.environ.get("BENCH_MATCHING_EVENT_OPS", "20000")))
    print(f"machine: {machine()}")
    started = time.perf_counter()
    work = generate(n_ops)
    ops = work.ops
    print(
        f"workload: {len(work.initial):,} initial orders, then {len(ops):,} operations "
        f"from {ACCOUNTS:,} accounts (generated in {time.perf_counter() - started:.1f} s)"
    )
    mix = ", ".join(
        f"{KIND_NAMES[kind]} {100 * work.mix[kind] / len(ops):.1f}%" for kind in KIND_NAMES
    )
    print(f"mix: {mix}")
    traded = ", ".join(
        f"{KIND_NAMES[kind]} {100 * work.trading[kind] / max(1, work.mix[kind]):.1f}%"
        for kind in (GTC, IOC, MOVE)
    )
    print(
        f"book: {min(work.live)}-{max(work.live)} live orders, "
        f"{min(work.levels)}-{max(work.levels)} price levels "
        f"(mean {sum(work.levels) / len(work.levels):.0f}); "
        f"{100 * work.trading.total() / len(ops):.1f}% of operations trade ({traded}); "
        f"{work.fills:,} fills"
    )

    tally = check_engine(engine_book(work.initial), ops)
    same = (tally.fills, tally.lots, tally.digest) == (work.fills, work.filled_lots, work.digest)
    print(
        f"cross-check: engine {tally.fills:,} fills of {tally.lots:,} lots, "
        f"naive {work.fills:,} fills of {work.filled_lots:,} lots, "
        f"fill digests {'equal' if same else 'DIFFER'}"
    )
    if not same:
        sys.exit("the engine and the naive book disagree")

    head = ops[:n_naive]
    gc.collect()
    gc.freeze()  # the workload is never garbage: keep it out of the collector's scans
    run_engine(engine_book(work.initial), ops[:100_000])  # warm-up
    run_naive(naive_book(work.initial), ops[:20_000])
    engine, naive = Runs(len(ops)), Runs(len(head))
    engine_times, naive_times, engine.rates = chunk_times(work.initial, ops, len(head))
    engine.rate = len(ops) / sum(engine_times)
    naive.rate = len(head) / sum(naive_times)
    ratio = sum(naive_times) / sum(engine_times[: len(naive_times)])
    harness = []  # ns per operation of each loop on a NullBook, the median of the rounds
    for loop in (run_engine, run_naive):
        times = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            loop(NullBook(), head)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
        harness.append(1e9 * median(times) / len(head))
    for _ in range(ROUNDS):
        for runs, figures in (
            (engine, latency(engine_book(work.initial), time_engine, ops)),
            (naive, latency(naive_book(work.initial), time_naive, head)),
        ):
            runs.p50.append(figures[0])
            runs.p99.append(figures[1])
            runs.p999.append(figures[2])
    print(
        f"timing: {ROUNDS} rounds, garbage collector on; ops/s from the median time of each "
        f"{CHUNK:,}-op chunk, engine and naive interleaved; latency: a pass timing each op "
        f"with perf_counter_ns, median of the rounds' percentiles"
    )
    print(engine.line("engine"))
    print(naive.line("naive "))
    print(f"ratio: engine/naive {ratio:.2f}x on the same first {len(head):,} operations")
    engine_ns = 1e9 * sum(engine_times[: len(naive_times)]) / len(head)
    naive_ns = 1e9 * sum(naive_times) / len(head)
    print(
        f"harness: the timing loop alone (the same loop on a book whose methods do nothing) "
        f"takes {harness[0]:.0f} ns/op for the engine's loop, {harness[1]:.0f} ns/op for the "
        f"naive book's; that is {100 * harness[0] / engine_ns:.0f}% of the engine's "
        f"{engine_ns:.0f} ns/op and {100 * harness[1] / naive_ns:.0f}% of the naive book's "
        f"{naive_ns:.0f} ns/op (included in both figures)"
    )
    gc.unfreeze()

    ev_ops, ev_events, ev_seconds, ev_trades, ev_share = exchange_with_events(work, n_events)
    expected = naive_fills(work, n_events)
    print(
        f"with events: {ev_ops:,} ops through Exchange, each event serialized by EventMapper: "
        f"{ev_ops / ev_seconds:,.0f} ops/s, {ev_events / ev_seconds:,.0f} events/s "
        f"({ev_events / ev_ops:.1f} events/op, {ev_trades:,} trades as the naive book "
        f"{'also' if ev_trades == expected else f'DIFFERS: {expected:,}'}; "
        f"serialization {100 * ev_share:.0f}% of the time)"
    )
    if ev_trades != expected:
        sys.exit("the exchange and the naive book disagree")
    rate, p99 = engine.rate, median(engine.p99)
    print(
        f"goals: >= 300,000 ops/s {'met' if rate >= 300_000 else 'MISSED'}, "
        f"p99 <= 20 µs {'met' if p99 <= 20 else 'MISSED'}, "
        f">= 3x naive {'met' if ratio >= 3 else 'MISSED'}"
    )
    print(f"BENCH matching {rate:.0f} ops/s")


if __name__ == "__main__":
    main()

"""Budgets and rate limits that hold across instances: admission before the upstream call, settlement after.

Each scope (a project, a key) has a counter per kind (budget, tokens, requests)
and window (`shared.quota.window`) in a `CounterStore`. An instance *leases* a
slice of a counter's remainder with one conditional write, admits calls from
its slice locally (each reserved at its worst case, `quota.Worst`), settles
each call locally when it ends (the real cost and tokens, a failed call at
nothing), and flushes what it used into the counter's `spent` when it renews
or returns its lease. So:

- a slice is at most `free / (SLICES x instances holding one)`, and at least
  one call's worst case: near the end of a budget each call is one write;
- a lease lives `LEASE_SECONDS`; its holder stops admitting from it
  `SKEW_SECONDS` before it expires, and the others count it as held until
  `SKEW_SECONDS` after (clocks a few seconds apart break nothing), then
  grant it again: an instance that dies leaves no hold behind longer than
  `LEASE_SECONDS + SKEW_SECONDS`;
- the overshoot is at most the calls' underestimates, plus the leases of
  instances lost while holding them (README, "Budgets and rate limits").

A scope's `when_store_unavailable` says what happens when a call needs the
store and it cannot be reached: "deny" answers 503, "allow" admits against
the remainder the instance last saw, and flushes what it used once the store is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .domain import Caller
from .errors import BudgetExhausted, ConfigurationError, GatewayError, LimitReached, LimitsStoreUnavailable
from .limit_stores import KEPT_AFTER_WINDOW_SECONDS, Conflict, CounterState, CounterStore
from .quota import BUDGET, REQUESTS, TOKENS, Counted, Quota, Scope, Window, Worst, counted, window

logger = logging.getLogger(__name__)

#: How long a lease lives without being renewed.
LEASE_SECONDS = 15.0
#: The most two instances' clocks may disagree.
SKEW_SECONDS = 3.0
#: How often an instance flushes what it used and renews the leases it uses.
RENEW_SECONDS = 2.0
#: A slice is at most the free remainder over SLICES times the instances holding one.
SLICES = 4
#: After a failed store call, calls that need the store do not wait for it for this long.
RETRY_SECONDS = 1.0
#: Conditional writes tried before a contended counter's call is asked to retry.
WRITE_TRIES = 8


@dataclass
class Counter:
    """This instance's view of one counter: its lease and the calls it admitted from it."""

    key: str
    scope: str
    kind: str
    limit: float
    window: Window
    quota: Quota
    #: The slice leased (as the store holds it), and when the lease expires (Unix time).
    held: float = 0.0
    expires: float = 0.0
    #: Calls in flight: reservation (`Admission.reservation`) -> (worst case, when it lapses).
    reservations: dict[str, tuple[float, float]] = field(default_factory=dict)
    reserved: float = 0.0
    #: Settled and not yet flushed into the store's `spent`.
    used: float = 0.0
    #: At the last read or write: the store's `spent`, the other instances' live leases and their reservations.
    spent: float = 0.0
    others: float = 0.0
    others_reserved: float = 0.0
    last_admitted: float = 0.0
    #: Admitting on the remainder last seen, the store unreachable ("allow").
    offline: bool = False
    state: CounterState | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def free(self, now: float) -> float:
        """What this instance may still admit from its lease."""
        if not self.offline and now >= self.expires - SKEW_SECONDS:
            return 0.0
        return self.held - self.reserved - self.used

    def fits(self, amount: float, now: float) -> bool:
        """Whether `amount` fits in what is free (sums of float amounts drift by a rounding or two)."""
        return self.free(now) >= amount - self.limit * 1e-9

    def hold(self, reservation: str, amount: float, lapses: float) -> None:
        self.reservations[reservation] = (amount, lapses)
        self.reserved += amount

    def settle(self, request_id: str, actual: float) -> None:
        """The call `request_id` ended having used `actual`; once only (a second settlement is nothing)."""
        found = self.reservations.pop(request_id, None)
        if found is None:
            return
        self.reserved = max(0.0, self.reserved - found[0]) if self.reservations else 0.0
        self.used += actual

    def remaining(self) -> float:
        """What is left of the limit, as far as this instance knows."""
        return max(0.0, self.limit - self.spent - self.others - self.used - self.reserved)


def _dollars(value: float) -> float:
    return round(value, 10)


def _count(value: float) -> int:
    """Tokens or requests as a whole number (slices are fractions of what is free): rounded down."""
    return math.floor(value + 1e-9)


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.1f}".rstrip("0").rstrip(".") + "s"


def rate_headers(counters: list[Counter], now: float) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest request and token limits among `counters`."""
    headers: dict[str, str] = {}
    for kind in (REQUESTS, TOKENS):
        tightest = min((c for c in counters if c.kind == kind), key=Counter.remaining, default=None)
        if tightest is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(int(tightest.limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(tightest.remaining()))
            headers[f"x-ratelimit-reset-{kind}"] = _seconds(tightest.window.ends - now)
    return headers


class Admission:
    """One admitted call's reservations: settled once when the call ends (`settle`). They are held under
    `reservation`, the request id made unique: a caller chooses its request ids, and two calls in flight
    with the same one are still two reservations, each settled at its own cost."""

    def __init__(self, limiter: Limiter, counters: list[Counter], reservation: str) -> None:
        self.limiter = limiter
        self.counters = counters
        self.reservation = reservation

    def headers(self) -> dict[str, str]:
        return rate_headers(self.counters, self.limiter.clock())

    def settle(self, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        actual = {BUDGET: cost, TOKENS: prompt_tokens + completion_tokens, REQUESTS: 1}
        for counter in self.counters:
            counter.settle(self.reservation, actual[counter.kind])


class Limiter:
    """Admits and settles calls against the scopes' counters in `store`, this process being one instance."""

    def __init__(
        self,
        store: CounterStore,
        *,
        clock: Callable[[], float] = time.time,
        reservation_seconds: float = 300.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.instance = uuid.uuid4().hex[:16]
        #: A call's reservation lapses this long after it was made, if the call never settled it.
        self.reservation_seconds = reservation_seconds
        self._counters: dict[str, Counter] = {}
        #: (scope, kind) -> the counter of the current window.
        self._current: dict[tuple[str, str], Counter] = {}
        self._down_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._admitted = itertools.count()

    async def admit(self, caller: Caller, request_id: str, worst: Worst) -> Admission:
        """Reserve `worst` against every limit of `caller`, or raise the refusal (429, or 503 under "deny"),
        which carries the x-ratelimit headers of the caller's limits."""
        now = self.clock()
        reservation = f"{request_id}#{next(self._admitted)}"
        counters = []
        for scope in caller.limits:
            if scope.quota is None:
                raise ConfigurationError(f"The limits of {scope.name} cannot be enforced: {scope.problem}.")
            counters += [self._counter(scope, scope.quota, measured, now) for measured in counted(scope.quota)]
        taken: list[Counter] = []
        try:
            for counter in counters:
                await self._reserve(counter, reservation, worst.amount(counter.kind))
                taken.append(counter)
        except BaseException as exc:
            for counter in taken:
                counter.settle(reservation, 0.0)
            if isinstance(exc, GatewayError):
                exc.headers = rate_headers(counters, self.clock()) | exc.headers
            raise
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        return Admission(self, taken, reservation)

    def _counter(self, scope: Scope, quota: Quota, measured: Counted, now: float) -> Counter:
        current = self._current.get((scope.name, measured.kind))
        if (
            current is not None
            and now < current.window.ends
            and current.limit == measured.limit
            and current.quota.budget_period == quota.budget_period
        ):
            current.quota = quota
            return current
        span = window(measured.kind, quota.budget_period, now)
        key = f"{scope.name}|{measured.kind}|{span.id}"
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Counter(key, scope.name, measured.kind, measured.limit, span, quota)
        counter.limit, counter.quota = measured.limit, quota
        self._current[(scope.name, measured.kind)] = counter
        return counter

    async def _reserve(self, counter: Counter, request_id: str, amount: float) -> None:
        now = self.clock()
        if not counter.lock.locked() and counter.fits(amount, now):
            counter.hold(request_id, amount, now + self.reservation_seconds)
            counter.last_admitted = now
            return
        async with counter.lock:
            now = self.clock()
            if not counter.fits(amount, now):
                await self._refresh(counter, amount)
            now = self.clock()
            if not counter.fits(amount, now):
                raise self._refusal(counter, amount, now)
            counter.hold(request_id, amount, now + self.reservation_seconds)
            counter.last_admitted = now

    async def _refresh(self, counter: Counter, wanted: float) -> None:
        """Lease what `wanted` needs from the store, or, with the store unreachable, what the scope's choice says."""
        if self.clock() >= self._down_until:
            try:
                await self._sync(counter, wanted, keep=True)
                return
            except Conflict:
                raise LimitReached(
                    f"The limits of {counter.scope} are busy; retry.",
                    kind=TOKENS if counter.kind == BUDGET else counter.kind,
                    retry_after=1,
                ) from None
            except Exception as exc:
                self._down_until = self.clock() + RETRY_SECONDS
                logger.warning("limit counters in %s unavailable (%s)", self.store.description, type(exc).__name__)
        if not counter.quota.allow_when_store_unavailable:
            raise LimitsStoreUnavailable(
                f"The limits of {counter.scope} cannot be checked: {self.store.description} is unavailable."
            )
        counter.offline = True
        counter.held = max(counter.held, counter.limit - counter.spent - counter.others)

    async def _sync(self, counter: Counter, wanted: float, keep: bool) -> None:
        """One conditional write: flush what was used, drop lapsed leases, and lease a slice (`wanted` at least;
        `keep`: some slice even when nothing is wanted now), or hand the slice back (only the reservations kept)."""
        for attempt in range(WRITE_TRIES):
            state = counter.state if attempt == 0 and counter.state is not None else await self.store.read(counter.key)
            now = self.clock()
            others = {
                instance: lease
                for instance, lease in state.leases.items()
                if instance != self.instance and lease["expires"] + SKEW_SECONDS > now
            }
            others_amount = sum(lease["amount"] for lease in others.values())
            flushed, reserved = counter.used, counter.reserved
            spent = state.spent + flushed
            free = counter.limit - spent - others_amount - reserved
            share = free / (SLICES * (len(others) + 1))
            slice_ = 0.0
            if free >= wanted - counter.limit * 1e-9 and (wanted > 0 or keep):
                slice_ = max(0.0, min(free, max(wanted, share)))
            amount = reserved + slice_
            leases = dict(others)
            if amount > 0:
                leases[self.instance] = {"amount": amount, "reserved": reserved, "expires": now + LEASE_SECONDS}
            ttl = int(counter.window.ends - now) + KEPT_AFTER_WINDOW_SECONDS
            try:
                version = await self.store.write(counter.key, CounterState(spent, leases, state.version), ttl)
            except Conflict:
                counter.state = None
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            counter.state = CounterState(spent, leases, version)
            counter.used -= flushed
            counter.held, counter.expires, counter.spent = amount, now + LEASE_SECONDS, spent
            counter.others = others_amount
            counter.others_reserved = sum(lease["reserved"] for lease in others.values())
            counter.offline = False
            return
        counter.state = None
        raise Conflict(counter.key)

    def _refusal(self, counter: Counter, amount: float, now: float) -> Exception:
        """Why `amount` does not fit: spent (429 for the rest of the window) or held by calls in flight and
        other instances' slices (429, retry shortly)."""
        resets = counter.window.ends - now
        exhausted = counter.spent + counter.used + amount > counter.limit
        if counter.kind == BUDGET and exhausted:
            return BudgetExhausted(
                f"The budget of ${counter.limit:.6g} for {counter.scope} for {counter.window.id} is spent "
                f"(${counter.spent + counter.used:.6g} of it); this call may cost up to ${amount:.6g}. "
                f"It resets at {datetime.fromtimestamp(counter.window.ends, UTC):%Y-%m-%dT%H:%M:%SZ}.",
            )
        what = "budget" if counter.kind == BUDGET else f"{counter.kind} per minute"
        kind = TOKENS if counter.kind == BUDGET else counter.kind
        if amount > counter.limit * (1 + 1e-9):  # no window will fit it: retrying is waiting for nothing
            return LimitReached(
                f"This call needs {amount:g} {counter.kind}, more than the limit of {counter.limit:g} "
                f"{what} of {counter.scope}; lower its max_tokens (or max_output_tokens), or its prompt.",
                kind=kind,
                retry_after=math.ceil(resets),
                headers={"x-should-retry": "false"},
            )
        retry_after = resets if exhausted else min(resets, RENEW_SECONDS)
        why = "is used up" if exhausted else "is held by calls in flight"
        return LimitReached(
            f"The {what} limit of {counter.scope} ({counter.limit:g}) {why} for {counter.window.id}; "
            f"this call needs {amount:g}. Retry in {math.ceil(retry_after)} s.",
            kind=kind,
            retry_after=math.ceil(retry_after),
        )

    async def _renew_forever(self) -> None:
        while self._counters:
            await asyncio.sleep(RENEW_SECONDS)
            await self.renew()

    async def renew(self) -> None:
        """Flush, renew, return and forget: what the background task does every `RENEW_SECONDS`."""
        now = self.clock()
        for key, counter in list(self._counters.items()):
            for request_id, (_, lapses) in list(counter.reservations.items()):
                if lapses <= now:
                    counter.settle(request_id, 0.0)
            ended = counter.window.ends + SKEW_SECONDS <= now
            if counter.lock.locked():
                continue
            idle = now - counter.last_admitted > 2 * RENEW_SECONDS
            holding = counter.held > 0 and (counter.state is None or self.instance in counter.state.leases)
            aging = now >= counter.expires - LEASE_SECONDS / 2
            due = counter.used > 0 or counter.offline or (holding and (idle or aging))
            if due and not ended and now >= self._down_until:
                async with counter.lock:
                    try:
                        await self._sync(counter, 0.0, keep=not idle)
                    except Exception as exc:
                        if not isinstance(exc, Conflict):
                            self._down_until = self.clock() + RETRY_SECONDS
                        continue
            returned = counter.used == 0 and counter.held <= 0
            if not counter.reservations and (ended or (idle and returned)):  # a window over is not flushed
                del self._counters[key]
                if self._current.get((counter.scope, counter.kind)) is counter:
                    del self._current[(counter.scope, counter.kind)]

    async def close(self, timeout: float = 5.0) -> None:
        """Hand back every slice and flush what was used (at shutdown)."""
        if self._task is not None:
            self._task.cancel()
        try:
            async with asyncio.timeout(timeout):
                for counter in list(self._counters.values()):
                    if counter.held > 0 or counter.used > 0:
                        async with counter.lock:
                            await self._sync(counter, 0.0, keep=False)
        except Exception as exc:
            logger.warning("limit leases not handed back at shutdown (%s)", type(exc).__name__)

    async def report(self, scopes: tuple[Scope, ...]) -> list[dict[str, Any]]:
        """Each limit of `scopes` in its current window: the limit, spent, reserved, leased, remaining, reset."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        for scope in scopes:
            if scope.quota is None:
                rows.append({"scope": scope.name, "error": scope.problem})
                continue
            for measured in counted(scope.quota):
                span = window(measured.kind, scope.quota.budget_period, now)
                key = f"{scope.name}|{measured.kind}|{span.id}"
                try:
                    state = await self.store.read(key)
                except Exception as exc:
                    raise LimitsStoreUnavailable(
                        f"Limits cannot be read: {self.store.description} is unavailable."
                    ) from exc
                local = self._counters.get(key)
                live = [lease for lease in state.leases.values() if lease["expires"] + SKEW_SECONDS > now]
                spent = state.spent + (local.used if local else 0.0)
                reserved = sum(lease["reserved"] for lease in live)
                held = sum(lease["amount"] for lease in live)
                amount = _dollars if measured.kind == BUDGET else _count
                rows.append(
                    {
                        "scope": scope.name,
                        "limit": measured.kind,
                        "window": span.id,
                        "max": measured.limit,
                        "spent": amount(spent),
                        "reserved": amount(reserved),
                        "leased": amount(max(0.0, held - reserved)),
                        "remaining": amount(max(0.0, measured.limit - spent - held)),
                        "resets_at": datetime.fromtimestamp(span.ends, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
        return rows

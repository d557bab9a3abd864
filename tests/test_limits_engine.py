"""The limiter on its own, instances being `Limiter`s on one store with clocks of their own: the stated
overshoot bound under concurrency, deaths and skewed clocks; leases lapsing in the stated time; "allow"."""

from __future__ import annotations

import asyncio
import random

import pytest

from shared.domain import Caller
from shared.errors import BudgetExhausted, LimitReached, LimitsStoreUnavailable
from shared.limit_stores import CounterState, MemoryCounterStore
from shared.limits import LEASE_SECONDS, RENEW_SECONDS, SKEW_SECONDS, Limiter
from shared.quota import Quota, Scope, Worst

START = 1_796_601_600.0  # 2026-12-07T00:00:00Z


class Interleaving(MemoryCounterStore):
    """The in-process store, yielding to other tasks around each call (as a network round trip does),
    and failing every call while `down`."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.writes = 0

    async def read(self, key: str) -> CounterState:
        await asyncio.sleep(0)
        if self.down:
            raise TimeoutError
        return await super().read(key)

    async def write(self, key: str, state: CounterState, ttl_seconds: int) -> str:
        await asyncio.sleep(0)
        if self.down:
            raise TimeoutError
        self.writes += 1
        return await super().write(key, state, ttl_seconds)


class View:
    """One instance's way to a shared store: `cut` makes every call of this instance fail."""

    description = "a view of the store"

    def __init__(self, store: MemoryCounterStore) -> None:
        self.store = store
        self.cut = False

    async def read(self, key: str) -> CounterState:
        if self.cut:
            raise TimeoutError
        return await self.store.read(key)

    async def write(self, key: str, state: CounterState, ttl_seconds: int) -> str:
        if self.cut:
            raise TimeoutError
        return await self.store.write(key, state, ttl_seconds)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def of(self, offset: float):
        return lambda: self.now + offset


def caller(**limits) -> Caller:
    return Caller("p", limits=(Scope("project:p", Quota(**limits)),))


def stop_background_tasks() -> None:
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()


async def simulate(seed: int) -> tuple[float, float, float]:
    """Instances with clocks up to SKEW_SECONDS apart serve calls concurrently, some die holding leases:
    (what calls used, the budget, the stated bound's allowance: underestimates + the lost leases)."""
    rng = random.Random(seed)
    store, clock = Interleaving(), Clock()
    budget = 50.0
    who = caller(budget_usd=budget)
    live = [Limiter(store, clock=clock.of(rng.uniform(0, SKEW_SECONDS))) for _ in range(4)]
    used = underestimates = lost = 0.0
    in_flight: list[tuple[Limiter, object, float]] = []
    for step in range(400):
        clock.now += rng.uniform(0, 1.5)
        starts = []
        for index in range(rng.randint(0, 6)):
            limiter = rng.choice(live)
            worst = rng.uniform(0.1, 2.0)
            starts.append((limiter, limiter.admit(who, f"{seed}-{step}-{index}", Worst(1, 1, worst)), worst))
        outcomes = await asyncio.gather(*(admitting for _, admitting, _ in starts), return_exceptions=True)
        for (limiter, _, worst), outcome in zip(starts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, BudgetExhausted | LimitReached), outcome
            else:
                in_flight.append((limiter, outcome, worst))
        rng.shuffle(in_flight)
        for _ in range(rng.randint(0, len(in_flight))):
            limiter, admission, worst = in_flight.pop()
            actual = worst * rng.uniform(0.5, 1.0) if rng.random() > 0.01 else worst * 1.1
            underestimates += max(0.0, actual - worst)
            used += actual
            admission.settle(1, 1, actual)  # type: ignore[attr-defined]
        if step % 3 == 0:
            await asyncio.gather(*(limiter.renew() for limiter in live))
        if step in (120, 260):  # an instance dies: what it holds in the store is lost with it
            doomed = rng.choice(live)
            live.remove(doomed)
            lost += sum(counter.held + counter.used for counter in doomed._counters.values())
            in_flight = [flight for flight in in_flight if flight[0] is not doomed]
            live.append(Limiter(store, clock=clock.of(rng.uniform(0, SKEW_SECONDS))))
        assert used <= budget + underestimates + lost + 1e-9, f"step {step}"
    stop_background_tasks()
    return used, budget, underestimates + lost


@pytest.mark.parametrize("seed", range(4))
def test_the_overshoot_stays_within_the_stated_bound(seed):
    used, budget, allowance = asyncio.run(simulate(seed))
    assert used <= budget + allowance + 1e-9
    assert used > budget / 2  # the budget was really spent, not refused away


def test_a_dead_instance_s_lease_is_held_until_lease_plus_skew_then_granted_again():
    async def scenario():
        store, clock = Interleaving(), Clock()
        # The instance that dies runs SKEW_SECONDS behind: its lease's expiry is the earliest it can write.
        doomed = Limiter(store, clock=clock.of(-SKEW_SECONDS))
        survivor = Limiter(store, clock=clock.of(0.0))
        who = caller(budget_usd=4.0)
        for index in range(4):
            await doomed.admit(who, f"held-{index}", Worst(1, 1, 1.0))
        died = clock.now
        while True:
            try:
                await survivor.admit(who, "again", Worst(1, 1, 1.0))
                break
            except LimitReached as refused:
                assert refused.type == "tokens" and refused.headers["Retry-After"] == str(int(RENEW_SECONDS))
            clock.now += 0.25
            assert clock.now - died < 2 * LEASE_SECONDS, "the dead instance's lease never lapsed"
        stop_background_tasks()
        return clock.now - died

    waited = asyncio.run(scenario())
    assert LEASE_SECONDS - SKEW_SECONDS <= waited <= LEASE_SECONDS + SKEW_SECONDS


def test_an_instance_cut_off_from_the_store_stops_admitting_before_the_others_grant_its_lease_again():
    async def scenario():
        store, clock = MemoryCounterStore(), Clock()
        cut_view = View(store)
        # Clocks SKEW_SECONDS apart, the one cut off behind: the latest it may still believe its lease good.
        cut_off = Limiter(cut_view, clock=clock.of(-SKEW_SECONDS))
        other = Limiter(View(store), clock=clock.of(0.0))
        who = caller(budget_usd=1.0)
        (await cut_off.admit(who, "lease", Worst(1, 1, 1.0))).settle(1, 1, 0.0)
        cut_view.cut = True
        both = []
        for step in range(int(3 * LEASE_SECONDS / 0.25)):
            clock.now += 0.25
            admitted = []
            for name, limiter in (("other", other), ("cut off", cut_off)):
                try:
                    (await limiter.admit(who, f"{name}-{step}", Worst(1, 1, 1.0))).settle(1, 1, 0.0)
                    admitted.append(name)
                except (LimitReached, LimitsStoreUnavailable):
                    pass
            both += [step] if len(admitted) == 2 else []
            if admitted == ["other"]:
                break
        stop_background_tasks()
        return admitted, both

    admitted, both = asyncio.run(scenario())
    assert admitted == ["other"], "the lease of the instance cut off never came back"
    assert not both, "both instances admitted against the same slice"


def test_a_live_instance_renews_so_its_reservations_outlive_the_lease():
    async def scenario():
        store, clock = Interleaving(), Clock()
        holder, other = Limiter(store, clock=clock.of(0.0)), Limiter(store, clock=clock.of(SKEW_SECONDS))
        who = caller(budget_usd=2.0)
        await holder.admit(who, "long", Worst(1, 1, 2.0))
        for _ in range(int(4 * LEASE_SECONDS / RENEW_SECONDS)):
            clock.now += RENEW_SECONDS
            await holder.renew()
            with pytest.raises(LimitReached):
                await other.admit(who, "squeezed", Worst(1, 1, 0.5))
        stop_background_tasks()

    asyncio.run(scenario())


def test_deny_refuses_once_the_lease_lapses_and_allow_serves_on_what_it_last_saw():
    async def scenario():
        store, clock = Interleaving(), Clock()
        limiter = Limiter(store, clock=clock.of(0.0))
        denied = Caller("d", limits=(Scope("project:d", Quota(budget_usd=100.0)),))
        allowed = Caller("a", limits=(Scope("project:a", Quota(budget_usd=100.0, when_store_unavailable="allow")),))
        for who in (denied, allowed):
            (await limiter.admit(who, f"first-{who.project}", Worst(1, 1, 1.0))).settle(1, 1, 1.0)
        store.down = True
        served = 0
        while True:
            try:
                (await limiter.admit(denied, f"d-{served}", Worst(1, 1, 1.0))).settle(1, 1, 1.0)
            except LimitsStoreUnavailable:
                break
            served += 1
            clock.now += 0.5
        assert clock.now - START <= LEASE_SECONDS - SKEW_SECONDS + 0.5
        for index in range(50):  # "allow": the 99 it last saw free
            (await limiter.admit(allowed, f"a-{index}", Worst(1, 1, 1.0))).settle(1, 1, 1.0)
            clock.now += 1
        store.down = False
        clock.now += 2
        await limiter.renew()
        rows = await limiter.report(allowed.limits)
        flushed = await store.read(f"project:a|budget|{rows[0]['window']}")
        stop_background_tasks()
        return flushed.spent

    assert asyncio.run(scenario()) == pytest.approx(51.0)


def test_settling_twice_counts_once():
    async def scenario():
        limiter = Limiter(Interleaving(), clock=Clock().of(0.0))
        who = caller(requests_per_minute=10, tokens_per_minute=1000)
        admission = await limiter.admit(who, "once", Worst(10, 10, 0.0))
        admission.settle(3, 4, 0.0)
        admission.settle(3, 4, 0.0)
        headers = admission.headers()
        stop_background_tasks()
        return headers

    headers = asyncio.run(scenario())
    assert headers["x-ratelimit-remaining-tokens"] == "993"
    assert headers["x-ratelimit-remaining-requests"] == "9"


def test_calls_sharing_a_caller_s_request_id_each_hold_and_settle_their_own_reservation():
    """`x-request-id` is the caller's to choose: calls that repeat one must not replace each other's
    reservations (admitting more than the budget) nor settle each other's (leaving spending uncounted)."""

    async def scenario():
        limiter = Limiter(Interleaving(), clock=Clock().of(0.0))
        who = caller(budget_usd=2.0)
        first = await limiter.admit(who, "same-id", Worst(1, 1, 1.0))
        second = await limiter.admit(who, "same-id", Worst(1, 1, 1.0))
        with pytest.raises((BudgetExhausted, LimitReached)):
            await limiter.admit(who, "same-id", Worst(1, 1, 1.0))
        first.settle(1, 1, 1.0)
        second.settle(1, 1, 1.0)
        rows = await limiter.report(who.limits)
        stop_background_tasks()
        return rows[0]

    row = asyncio.run(scenario())
    assert row["spent"] == pytest.approx(2.0)


def test_a_budget_whose_period_changes_counts_in_the_new_period_s_window():
    async def scenario():
        limiter = Limiter(Interleaving(), clock=Clock().of(0.0))
        (await limiter.admit(caller(budget_usd=10.0), "month", Worst(1, 1, 6.0))).settle(1, 1, 6.0)
        daily = caller(budget_usd=10.0, budget_period="day")
        admission = await limiter.admit(daily, "day", Worst(1, 1, 6.0))  # today's window has spent nothing
        windows = {counter.window.id for counter in admission.counters}
        stop_background_tasks()
        return windows

    assert asyncio.run(scenario()) == {"2026-12-07"}


def test_the_report_counts_tokens_and_requests_in_whole_numbers():
    async def scenario():
        limiter = Limiter(Interleaving(), clock=Clock().of(0.0))
        who = caller(tokens_per_minute=100, requests_per_minute=5)
        (await limiter.admit(who, "r", Worst(3, 4, 0.0))).settle(3, 4, 0.0)
        await limiter.renew()  # flushes what was used, and leases a quarter of what is left: 23.25 tokens
        rows = await limiter.report(who.limits)
        stop_background_tasks()
        return rows

    for row in asyncio.run(scenario()):
        numbers = {name: row[name] for name in ("max", "spent", "reserved", "leased", "remaining")}
        assert all(type(value) is int for value in numbers.values()), row
        assert numbers["spent"] + numbers["leased"] + numbers["remaining"] <= numbers["max"]

"""Budgets and rate limits as data: the `limits` object, its windows, and a call's worst case. Pure Python, no I/O.

A project document (and a key document, applied in addition) may carry

    "limits": {"budget_usd": 500.0, "budget_period": "month", "tokens_per_minute": 200000,
               "requests_per_minute": 600, "when_store_unavailable": "deny"}

every field optional. `shared.limits` enforces them across instances.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

LIMIT_FIELDS = ("budget_usd", "budget_period", "tokens_per_minute", "requests_per_minute", "when_store_unavailable")
PERIODS = ("day", "month")
WHEN_STORE_UNAVAILABLE = ("deny", "allow")

#: The three things counted, each against its own limit.
BUDGET, TOKENS, REQUESTS = "budget", "tokens", "requests"

#: Tokens an image, audio clip or file part of a prompt is reserved at (its bytes are not text).
MEDIA_PART_TOKENS = 2_000
#: Completion tokens reserved when neither the caller nor the catalog entry (`max_output_tokens`) caps them.
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "audio", "file", "input_file", "image"})
_OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class InvalidLimits(ValueError):
    """A `limits` object that cannot be enforced; `field` names the bad field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'limits.{field}' {problem}" if field != "limits" else f"'limits' {problem}")
        self.field = field if field == "limits" else f"limits.{field}"


@dataclass(frozen=True)
class Quota:
    """One `limits` object, checked."""

    budget_usd: float | None = None
    budget_period: str = "month"
    tokens_per_minute: int | None = None
    requests_per_minute: int | None = None
    when_store_unavailable: str = "deny"

    @property
    def allow_when_store_unavailable(self) -> bool:
        return self.when_store_unavailable == "allow"

    def document(self) -> dict[str, Any]:
        """The object as stored: the fields set."""
        fields = {
            "budget_usd": self.budget_usd,
            "budget_period": self.budget_period if self.budget_usd is not None else None,
            "tokens_per_minute": self.tokens_per_minute,
            "requests_per_minute": self.requests_per_minute,
            "when_store_unavailable": self.when_store_unavailable,
        }
        return {name: value for name, value in fields.items() if value is not None}


def parse_limits(value: Any) -> Quota:
    """`value` as a Quota, or InvalidLimits naming the first bad field."""
    if not isinstance(value, Mapping):
        raise InvalidLimits("limits", "must be an object")
    unknown = sorted(set(value) - set(LIMIT_FIELDS))
    if unknown:
        raise InvalidLimits(unknown[0], f"is not a limit; the fields are: {', '.join(LIMIT_FIELDS)}")

    def number(name: str, whole: bool) -> Any:
        given = value.get(name)
        if given is None:
            return None
        if isinstance(given, bool) or not isinstance(given, int | float) or given < 0 or given != given:
            raise InvalidLimits(name, "must be a non-negative number")
        if whole and not float(given).is_integer():
            raise InvalidLimits(name, "must be a whole number")
        return int(given) if whole else float(given)

    def choice(name: str, allowed: tuple[str, ...]) -> str:
        given = value.get(name, allowed[0])
        if given not in allowed:
            raise InvalidLimits(name, f"must be one of: {', '.join(allowed)}")
        return str(given)

    return Quota(
        budget_usd=number("budget_usd", whole=False),
        budget_period=choice("budget_period", ("month", "day")),
        tokens_per_minute=number("tokens_per_minute", whole=True),
        requests_per_minute=number("requests_per_minute", whole=True),
        when_store_unavailable=choice("when_store_unavailable", WHEN_STORE_UNAVAILABLE),
    )


@dataclass(frozen=True)
class Scope:
    """Whose limits: `project:<id>` or `key:<key id>`, and the quota (None: its document's `limits` is invalid)."""

    name: str
    quota: Quota | None
    problem: str | None = None


def scope_of(name: str, document: Mapping[str, Any]) -> Scope | None:
    """The scope a project or key document's `limits` makes, None without any."""
    if document.get("limits") is None:
        return None
    try:
        return Scope(name, parse_limits(document["limits"]))
    except InvalidLimits as exc:
        return Scope(name, None, str(exc))


@dataclass(frozen=True)
class Window:
    """One counting period: its id (`2026-12`, `2026-12-08`, `2026-12-08T10:31`) and when it ends (Unix time)."""

    id: str
    ends: float


def window(kind: str, period: str, now: float) -> Window:
    """The UTC calendar period (budgets) or fixed minute (rate limits) that `now` falls in."""
    moment = datetime.fromtimestamp(now, UTC)
    if kind != BUDGET:
        start = moment.replace(second=0, microsecond=0)
        return Window(start.strftime("%Y-%m-%dT%H:%M"), (start + timedelta(minutes=1)).timestamp())
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp())
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return Window(start.strftime("%Y-%m"), (start + timedelta(days=days)).timestamp())


@dataclass(frozen=True)
class Counted:
    """What one counter measures of a scope: its kind and limit."""

    kind: str
    limit: float


def counted(quota: Quota) -> list[Counted]:
    found = []
    if quota.budget_usd is not None:
        found.append(Counted(BUDGET, quota.budget_usd))
    if quota.tokens_per_minute is not None:
        found.append(Counted(TOKENS, quota.tokens_per_minute))
    if quota.requests_per_minute is not None:
        found.append(Counted(REQUESTS, quota.requests_per_minute))
    return found


@dataclass(frozen=True)
class Worst:
    """A call's worst case: what it is reserved at before the upstream call."""

    prompt_tokens: int
    completion_tokens: int
    cost: float

    def amount(self, kind: str) -> float:
        if kind == BUDGET:
            return self.cost
        if kind == TOKENS:
            return self.prompt_tokens + self.completion_tokens
        return 1


def prompt_tokens(body: Any) -> int:
    """An upper bound on a prompt's tokens: the UTF-8 bytes of its JSON (a token is at least one byte,
    and the JSON's quotes and keys outnumber the per-message tokens), media parts at `MEDIA_PART_TOKENS`."""
    if isinstance(body, str):
        return len(body.encode()) + 2
    if isinstance(body, bytes | bytearray):
        return MEDIA_PART_TOKENS
    if isinstance(body, Mapping):
        if body.get("type") in _MEDIA_TYPES:
            return MEDIA_PART_TOKENS
        return 2 + sum(len(str(key)) + 4 + prompt_tokens(item) for key, item in body.items())
    if isinstance(body, list | tuple):
        return 2 + sum(1 + prompt_tokens(item) for item in body)
    return len(json.dumps(body, default=str))


def completion_tokens(body: Mapping[str, Any], catalog_cap: int | None, produces_text: bool) -> int:
    """The most completion tokens a call may produce: the caller's cap, else the catalog entry's, times `n`."""
    if not produces_text:
        return 0
    cap = next((body[name] for name in _OUTPUT_CAPS if isinstance(body.get(name), int)), None)
    if cap is None:
        cap = catalog_cap or DEFAULT_MAX_OUTPUT_TOKENS
    choices = body.get("n")
    return int(cap) * (choices if isinstance(choices, int) and choices > 1 else 1)


def worst_case(body: Mapping[str, Any], models: Iterable[Any], produces_text: bool) -> Worst:
    """The worst case of a call with `body` on any of its candidate models (`domain.LLMModel`), at their prices."""
    prompt = prompt_tokens(body)
    completion = 0
    cost = 0.0
    for model in models:
        tokens = completion_tokens(body, model.max_output_tokens, produces_text)
        completion = max(completion, tokens)
        cost = max(cost, model.calculate_cost(prompt, tokens))
    return Worst(prompt, completion, cost)

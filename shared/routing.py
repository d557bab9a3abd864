"""Choosing a deployment, retrying the next one, falling back to other models.

A model's deployments are tried by priority (lower first), spread by weight
within a priority. A call that fails with a rate limit, a timeout, a 5xx or a
connection error moves on to the next deployment, then to the model's
fallbacks. A deployment that answered 429 is skipped for its Retry-After (or a
default cool-down); one that failed `BREAKER_THRESHOLD` times in a row is
skipped for `BREAKER_COOLDOWN_SECONDS`, then tried again. This state lives in
the process: each Functions instance learns about its deployments on its own.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from .domain import Deployment, LLMModel
from .errors import GatewayError, RateLimited, UpstreamError, UpstreamTimeout
from .providers import ProviderCall, ProviderMapper

T = TypeVar("T")

RATE_LIMIT_COOLDOWN_SECONDS = 10.0
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_SECONDS = 30.0

#: Errors worth another deployment: rate limits, timeouts, 5xx and unreachable upstreams.
RETRYABLE = (RateLimited, UpstreamTimeout, UpstreamError)


class DeploymentHealth:
    """Cool-downs and consecutive failures per (model, deployment)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cooling_until: dict[tuple[str, str], float] = {}
        self._failures: dict[tuple[str, str], int] = {}

    def remaining(self, key: tuple[str, str]) -> float:
        return max(0.0, self._cooling_until.get(key, 0.0) - self._clock())

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)
        self._cooling_until.pop(key, None)

    def failed(self, key: tuple[str, str], error: GatewayError) -> None:
        if isinstance(error, RateLimited):
            self._cool(key, _retry_after(error) or RATE_LIMIT_COOLDOWN_SECONDS)
            return
        self._failures[key] = self._failures.get(key, 0) + 1
        if self._failures[key] >= BREAKER_THRESHOLD:
            self._failures.pop(key)
            self._cool(key, BREAKER_COOLDOWN_SECONDS)

    def _cool(self, key: tuple[str, str], seconds: float) -> None:
        self._cooling_until[key] = self._clock() + seconds


def _retry_after(error: GatewayError) -> float | None:
    try:
        return float(error.headers.get("Retry-After", ""))
    except ValueError:
        return None


class Router:
    def __init__(self, providers: ProviderMapper, health: DeploymentHealth | None = None, rng: random.Random | None = None):
        self.providers = providers
        self.health = health or DeploymentHealth()
        self._rng = rng or random.Random()

    def order(self, model: LLMModel) -> Iterator[Deployment]:
        """The deployments to try: by priority, then a weighted shuffle."""
        for priority in sorted({d.priority for d in model.deployments}):
            group = [d for d in model.deployments if d.priority == priority]
            while group:
                chosen = self._rng.choices(group, weights=[d.weight for d in group])[0]
                group.remove(chosen)
                yield chosen

    async def run(
        self, models: list[LLMModel], attempt: Callable[[LLMModel, ProviderCall], Awaitable[T]]
    ) -> tuple[LLMModel, T]:
        """The first model and result that `attempt` produces, trying every
        deployment of each model in turn; raises the last retryable error, or
        429 when every deployment is cooling down."""
        last_error: GatewayError | None = None
        cooling: list[float] = []
        for model in models:
            for deployment in self.order(model):
                key = (model.id, deployment.name)
                remaining = self.health.remaining(key)
                if remaining > 0:
                    cooling.append(remaining)
                    continue
                try:
                    result = await attempt(model, await self.providers.call_for(model, deployment))
                except RETRYABLE as error:
                    self.health.failed(key, error)
                    last_error = error
                    continue
                self.health.succeeded(key)
                return model, result
        if last_error is not None:
            raise last_error
        wait = math.ceil(min(cooling))
        raise RateLimited(
            f"Every deployment of model '{models[0].id}' is cooling down after rate limits or failures; "
            f"retry in {wait} s.",
            headers={"Retry-After": str(wait)},
        )

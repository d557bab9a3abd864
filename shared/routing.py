"""Choosing a deployment, retrying the next one, falling back to other models.

A model's deployments are tried by priority (lower first), spread by weight
within a priority. A call that fails with a rate limit, a timeout, a 5xx or a
connection error moves on to the next deployment, then to the model's
fallbacks. A deployment that answered 429 cools down for its Retry-After (or a
default cool-down); one that failed `BREAKER_THRESHOLD` times in a row cools
down for `BREAKER_COOLDOWN_SECONDS`. A deployment whose call cannot be built
(a secret reference that does not resolve, say) counts as such a failure too,
and is logged: the call moves on, and only when no deployment or fallback is
left does the caller get the configuration error (500, naming the reference).

The provider decides when there is nowhere else to go: a cooling deployment is
skipped only while another candidate (deployment or fallback) is not cooling.
When every candidate is cooling, the one that recovers first is called anyway,
and its answer (a 429 with its Retry-After, say) is the caller's. Only
provider-side and configuration failures feed cool-downs: never a 4xx the
caller caused. This state lives in the process: each
Functions instance learns about its deployments on its own.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from .domain import Deployment, LLMModel
from .errors import ConfigurationError, GatewayError, RateLimited, UpstreamError, UpstreamTimeout
from .providers.base import Attempt
from .providers.mapper import ProviderMapper

logger = logging.getLogger(__name__)

T = TypeVar("T")

RATE_LIMIT_COOLDOWN_SECONDS = 10.0
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_SECONDS = 30.0

#: Errors worth another deployment: rate limits, timeouts, 5xx and unreachable upstreams.
RETRYABLE = (RateLimited, UpstreamTimeout, UpstreamError)


def health_key(model: LLMModel, deployment: Deployment) -> tuple[str, str]:
    """What `DeploymentHealth` keeps its state by: a model's deployment."""
    return model.id, deployment.name


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
    def __init__(
        self, providers: ProviderMapper, health: DeploymentHealth | None = None, rng: random.Random | None = None
    ):
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
        self,
        models: list[LLMModel],
        attempt: Attempt[T],
        *,
        healthy_on_return: bool = True,
    ) -> tuple[LLMModel, T]:
        """The first model and result that `attempt` produces, trying each
        candidate deployment in turn; raises the last provider-side error, or
        when there was none, the last deployment's configuration error.

        A deployment whose attempt returns counts as healthy, unless
        `healthy_on_return` is False: a stream's outcome is known only when it
        ends, and its caller reports it then (`health`)."""
        last_error: GatewayError | None = None
        misconfigured: ConfigurationError | None = None
        for model, deployment in self.candidates(models):
            key = health_key(model, deployment)
            try:
                call = await self.providers.call_for(model, deployment)
            except ConfigurationError as error:
                logger.warning("model %s, deployment %s cannot be called: %s", model.id, deployment.name, error.message)
                self.health.failed(key, error)
                misconfigured = error
                continue
            try:
                result = await attempt(model, call)
            except RETRYABLE as error:
                self.health.failed(key, error)
                last_error = error
                continue
            if healthy_on_return:
                self.health.succeeded(key)
            return model, result
        failure = last_error or misconfigured
        assert failure is not None
        raise failure

    def candidates(self, models: list[LLMModel]) -> list[tuple[LLMModel, Deployment]]:
        """Every deployment of every model, in order, less those cooling down;
        when all are cooling down, the one that recovers first."""
        ordered = [(model, deployment) for model in models for deployment in self.order(model)]
        ready = [pair for pair in ordered if self.health.remaining(health_key(*pair)) == 0]
        if ready:
            return ready
        return [min(ordered, key=lambda pair: self.health.remaining(health_key(*pair)))]

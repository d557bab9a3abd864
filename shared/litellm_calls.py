"""Attempts made through LiteLLM: one deployment, called with the request's
arguments and the deployment's credentials (`providers.ProviderCall`).

A result becomes an `Answer` and a stream an `Upstream` (see `calls.py`);
a failure becomes a gateway error (`upstream.translate`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .calls import Answer, Attempt, Event, Upstream
from .domain import LLMModel
from .llm import litellm
from .providers import ProviderCall
from .upstream import translate

T = TypeVar("T")


class Shaper(Protocol):
    """A stream's items as the caller's events (`wire.ChatStream`, `wire.ResponseEvents`)."""

    usage: Any
    model: str | None

    def event(self, result: Any) -> Event | None: ...


async def translated(model: LLMModel, call: ProviderCall, pending: Awaitable[T]) -> T:
    """Await a provider call; its failure becomes a gateway error."""
    try:
        return await pending
    except Exception as exc:
        raise translate(exc, model.id, call.undisclosed) or exc from None


async def answered(model: LLMModel, call: ProviderCall, pending: Awaitable[Any]) -> Answer[Any]:
    """A LiteLLM result as an `Answer`, with the token counts and model name it carries."""
    result = await translated(model, call, pending)
    provider_model = getattr(result, "model", None)
    return Answer(result, getattr(result, "usage", None), provider_model if isinstance(provider_model, str) else None)


def whole(function: str, arguments: dict[str, Any]) -> Attempt[Answer[Any]]:
    """An attempt that calls LiteLLM's `function` with one deployment's credentials."""

    async def attempt(model: LLMModel, call: ProviderCall) -> Answer[Any]:
        llm = await litellm()
        return await answered(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))

    return attempt


def stream(function: str, arguments: dict[str, Any], shaper: Callable[[str], Shaper]) -> Attempt[Upstream]:
    """An attempt that opens a LiteLLM stream; `shaper(model_id)` shapes its items."""

    async def attempt(model: LLMModel, call: ProviderCall) -> Upstream:
        llm = await litellm()
        items = await translated(model, call, getattr(llm, function)(**call.keyword_arguments(arguments)))
        return LiteLLMStream(items, model.id, call.undisclosed, shaper(model.id))

    return attempt


class LiteLLMStream:
    """A LiteLLM stream (a `calls.Upstream`), its failures as gateway errors."""

    def __init__(self, items: Any, model_id: str, secrets: tuple[str, ...], shaper: Shaper) -> None:
        self.items = items
        self.model_id = model_id
        self.secrets = secrets
        self.shaper = shaper

    @property
    def usage(self) -> Any:
        return self.shaper.usage

    @property
    def model(self) -> str | None:
        return self.shaper.model

    async def events(self) -> AsyncGenerator[Event | None, None]:
        items = aiter(self.items)
        while True:
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise translate(exc, self.model_id, self.secrets) or exc from None
            yield self.shaper.event(item)

    async def close(self, completed: bool) -> None:
        aclose = getattr(self.items, "aclose", None)
        if aclose is not None:
            await aclose()

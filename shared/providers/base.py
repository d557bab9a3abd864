"""The one interface between the gateway and the providers.

Each way of calling a provider is a `Transport` (httpx's transports are the
model): the Azure OpenAI relay (`azure_relay.py`), LiteLLM
(`litellm_calls.py`), Vertex Imagen (`vertex.py`), Gemini and Claude chat
on Vertex (`vertex_chat.py`), the Responses API over a deployment's chat
completions (`responses_chat.py`, wrapping another transport) and the Mock (`mock.py`).
`mapper.ProviderMapper` gives each deployment its transport once, when it
maps the catalog entry to a `mapper.ProviderCall`; the gateway asks the
call's transport for a whole answer or a stream, whatever the provider.
What a transport returns is already OpenAI's wire format (`wire.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..domain import LLMModel, Operation
from ..wire import Event

if TYPE_CHECKING:
    from .mapper import ProviderCall

T = TypeVar("T")
#: One try on one deployment of one model; raises a gateway error when it fails.
Attempt = Callable[[LLMModel, "ProviderCall"], Awaitable[T]]


@dataclass(frozen=True)
class Request:
    """What a transport reads of a caller's request for one operation."""

    operation: Operation
    #: The caller's validated body (the relay sends it as it is), `stream_options` set to meter a stream.
    body: dict[str, Any]
    #: The same request as LiteLLM's keyword arguments (`arguments.litellm_arguments`).
    arguments: dict[str, Any]
    #: Whether the caller asked for a stream's usage chunk (the gateway always asks the provider for it).
    caller_wants_usage: bool = False
    #: Whether the caller gets a stream (chat completions and responses may ask for one).
    stream: bool = False

    @property
    def model(self) -> str:
        """The catalog model the caller asked for (its id or code)."""
        return str(self.body["model"])


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A whole result for the caller, and what the meter reads of it."""

    body: T
    #: The provider's token counts (OpenAI's `usage` shape), if it gave them.
    usage: Any = None
    #: The provider's own name for the model that answered (telemetry's `gen_ai.response.model`).
    model: str | None = None


class Upstream(Protocol):
    """A provider stream once opened, as the caller's events."""

    @property
    def usage(self) -> Any:
        """The provider's latest token counts, once seen."""
        ...

    @property
    def model(self) -> str | None:
        """The provider's own name for the model that answers, once seen."""
        ...

    def events(self) -> AsyncIterator[Event | None]:
        """Per item read from the provider, the caller's event for it (None when nothing is sent)."""
        ...

    async def close(self, completed: bool) -> None:
        """Release the provider's response; `completed` when it was read to its end."""
        ...


class Transport(Protocol):
    """One way of calling a provider: one attempt on one deployment (`call`).

    A whole answer's body is what the caller gets: a JSON object, the
    provider's bytes when relayed, audio bytes, or text. A failure is a
    gateway error (`errors.py` of this package translates the provider's)."""

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]: ...

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream: ...

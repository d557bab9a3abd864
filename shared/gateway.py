"""The gateway's use cases: one async method per operation.

Each one resolves the model the caller may use for the operation, builds the
LiteLLM call from the catalog entry, calls it, and returns an OpenAI-shaped
result.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

from . import payloads
from .catalog import Catalog
from .domain import Caller, LLMModel, Operation
from .errors import ModelNotFound, UnsupportedOperation
from .http import EventStream, Inbound, JSONResult
from .llm import litellm
from .projects import Authenticator
from .providers import ProviderCall, ProviderMapper
from .upstream import translate


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        providers: ProviderMapper,
        authenticator: Authenticator,
        environment: str,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.authenticator = authenticator
        self.environment = environment
        self._closers = closers

    async def close(self) -> None:
        """Release the clients the gateway opened (at shutdown)."""
        for close in self._closers:
            await close()

    async def health(self, inbound: Inbound) -> JSONResult:
        return JSONResult({"status": "healthy", "environment": self.environment})

    async def list_models(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        models = [
            _model_object(model)
            for model in await self.catalog.entries()
            if model.is_available_for_project(caller.project)
        ]
        return JSONResult({"object": "list", "data": sorted(models, key=lambda m: m["id"])})

    async def get_model(self, inbound: Inbound) -> JSONResult:
        caller = await self._caller(inbound)
        return JSONResult(_model_object(await self._visible_model(caller, inbound.path_param("model_id"))))

    async def chat_completions(self, inbound: Inbound) -> JSONResult | EventStream:
        caller = await self._caller(inbound)
        body = payloads.chat_completion(await inbound.json())
        model = await self._model_for(caller, body["model"], Operation.CHAT_COMPLETION)
        call = await self.providers.call_for(model)
        arguments = payloads.litellm_arguments(body, payloads.CHAT_COMPLETION_FIELDS) | call.arguments
        llm = await litellm()
        try:
            response = await llm.acompletion(**arguments)
        except Exception as exc:
            raise translate(exc, model.id, call.secrets) or exc
        if not body.get("stream"):
            return JSONResult(_for_caller(response.model_dump(), model))
        return EventStream(await _primed(_chat_chunks(response, model, call)))

    async def _caller(self, inbound: Inbound) -> Caller:
        return await self.authenticator.caller(inbound.headers)

    async def _visible_model(self, caller: Caller, model_id: str) -> LLMModel:
        model = await self.catalog.find(model_id)
        if model is None or not model.is_available_for_project(caller.project):
            raise ModelNotFound(model_id)
        return model

    async def _model_for(self, caller: Caller, model_id: str, operation: Operation) -> LLMModel:
        model = await self._visible_model(caller, model_id)
        if not model.supports_operation(operation):
            raise UnsupportedOperation(
                f"Model '{model.id}' does not support the operation '{operation.value}'. "
                f"It supports: {', '.join(op.value for op in model.operations) or 'nothing'}.",
                param="model",
            )
        return model


def _model_object(model: LLMModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.provider.value.lower(),
        "name": model.name,
        "operations": [operation.value for operation in model.operations],
    }


def _for_caller(payload: dict[str, Any], model: LLMModel) -> dict[str, Any]:
    """A provider payload as the caller sees it: named after the catalog model,
    without the fields LiteLLM adds (its own cost estimate, provider extras)."""
    payload["model"] = model.id
    payload.pop("provider_specific_fields", None)
    for choice in payload.get("choices") or ():
        choice.pop("provider_specific_fields", None)
    usage = payload.get("usage")
    if isinstance(usage, dict):
        usage.pop("cost", None)
    return payload


async def _chat_chunks(
    stream: Any, model: LLMModel, call: ProviderCall
) -> AsyncGenerator[tuple[str | None, Any], None]:
    try:
        async for chunk in stream:
            yield None, _for_caller(chunk.model_dump(exclude_none=True), model)
    except Exception as exc:
        raise translate(exc, model.id, call.secrets) or exc


async def _primed(
    events: AsyncGenerator[tuple[str | None, Any], None],
) -> AsyncGenerator[tuple[str | None, Any], None]:
    """Wait for the first event now, so a failure to start is a plain HTTP error."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return events
    return _chain(first, events)


async def _chain(
    first: tuple[str | None, Any], rest: AsyncGenerator[tuple[str | None, Any], None]
) -> AsyncGenerator[tuple[str | None, Any], None]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()

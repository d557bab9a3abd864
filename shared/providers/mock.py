"""The Mock model's transport: no provider is called.

LiteLLM's own `mock_response` answers chat completions, Responses, images and
audio (`mapper.py` sets it); embeddings, which LiteLLM's mock answers with
one vector whatever the input, are answered here.
"""

from __future__ import annotations

from typing import Any

from .. import wire
from ..domain import LLMModel, Operation
from ..errors import InvalidRequest
from .base import Answer, Request, Transport, Upstream
from .mapper import ProviderCall


class Mock:
    """Embeddings answered here; every other operation through `fallback` (LiteLLM's `mock_response`)."""

    def __init__(self, fallback: Transport) -> None:
        self.fallback = fallback

    async def whole(self, model: LLMModel, call: ProviderCall, request: Request) -> Answer[Any]:
        if request.operation is not Operation.EMBEDDINGS:
            return await self.fallback.whole(model, call, request)
        assert call.mock_embedding is not None, "the mapper gives every Mock deployment its vector"
        payload = mock_embeddings(call.mock_embedding, request.body["input"], model.id)
        usage = payload["usage"]
        if request.arguments.get("encoding_format") == "base64":
            payload = wire.base64_embeddings(payload)
        return Answer(payload, usage)

    async def stream(self, model: LLMModel, call: ProviderCall, request: Request) -> Upstream:
        if request.operation is Operation.RESPONSES:
            raise InvalidRequest(
                f"Model '{model.id}' is a Mock model: it answers the Responses API whole. Set 'stream' to false.",
                param="stream",
            )
        return await self.fallback.stream(model, call, request)


def mock_embeddings(vector: list[float], given: Any, model_id: str) -> dict[str, Any]:
    """A Mock model's `CreateEmbeddingResponse`: `vector` for each input (LiteLLM's
    mock answers one vector whatever the input), a token per word or token id."""
    inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
    tokens = sum(len(item) if isinstance(item, list) else max(1, len(item.split())) for item in inputs)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": list(vector)} for index in range(len(inputs))],
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

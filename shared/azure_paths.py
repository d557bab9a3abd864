"""Azure OpenAI's data-plane paths, served by the gateway's own operations.

Code written for `openai.AzureOpenAI` calls
`/openai/deployments/{deployment}/<operation>?api-version=...` with an
`api-key` header. Here the deployment is a catalog model (its id or code), so
it becomes the request's `model`, and every rule of the `/v1` operation
applies unchanged: keys, private models, operations, usage, errors. The
`api-version` a client sends is accepted and not used: what goes upstream is
the catalog's `api_version` for the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from .http import Endpoint, Result
from .inbound import Inbound

DEPLOYMENT_PARAM = "model"


class _DeploymentInbound:
    """The caller's request, its body's `model` taken from the path's deployment."""

    def __init__(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._model = inbound.path_param(DEPLOYMENT_PARAM)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbound, name)

    async def json(self, read: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        def with_model(body: dict[str, Any]) -> Any:
            body["model"] = self._model
            return body if read is None else read(body)

        return await self._inbound.json(with_model)

    async def form(self, limit: int, read: Callable[[dict[str, Any]], Any]) -> Any:
        return await self._inbound.form(limit, lambda fields: read(fields | {"model": self._model}))


def deployment(endpoint: Endpoint) -> Endpoint:
    """`endpoint` for a `/openai/deployments/{model}/...` path."""

    async def in_deployment(inbound: Inbound) -> Result:
        return await endpoint(cast(Inbound, _DeploymentInbound(inbound)))

    return in_deployment

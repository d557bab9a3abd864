"""Entra ID tokens from `DefaultAzureCredential` (managed identity in Azure).

Caching and renewal are the library's: `azure.identity.aio.get_bearer_token_provider`
keeps a scope's token, renews it before it expires, and lets concurrent callers
share one token request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any


class AzureTokenSource:
    """Bearer tokens per scope; the credential is created on first use."""

    def __init__(self) -> None:
        self._credential: Any = None
        self._providers: dict[str, Callable[[], Coroutine[Any, Any, str]]] = {}

    async def token(self, scope: str) -> str:
        provider = self._providers.get(scope)
        if provider is None:
            from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

            if self._credential is None:
                self._credential = DefaultAzureCredential()
            provider = self._providers[scope] = get_bearer_token_provider(self._credential, scope)
        return await provider()

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()

"""Entra ID tokens from `DefaultAzureCredential` (managed identity in Azure)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

#: Renew a token this long before it expires.
REFRESH_MARGIN_SECONDS = 300


class AzureTokenSource:
    """Bearer tokens per scope, cached until shortly before they expire.

    The credential is created on first use; concurrent callers of one scope
    share a single token request.
    """

    def __init__(self, credential: Any = None) -> None:
        self._credential = credential
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def token(self, scope: str) -> str:
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] - REFRESH_MARGIN_SECONDS > time.time():
            return cached[0]
        async with self._locks.setdefault(scope, asyncio.Lock()):
            cached = self._tokens.get(scope)
            if cached is not None and cached[1] - REFRESH_MARGIN_SECONDS > time.time():
                return cached[0]
            access = await self._get_credential().get_token(scope)
            self._tokens[scope] = (access.token, float(access.expires_on))
            return access.token

    def _get_credential(self) -> Any:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        return self._credential

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()

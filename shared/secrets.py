"""Secret references (`"$NAME"` in catalog parameters) and where they resolve."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .cache import RETRY_SECONDS, StaleWhileRevalidate
from .errors import ConfigurationError, SecretStoreUnavailable


class SecretSource(Protocol):
    """Returns a secret's value, or None when the source has no such secret."""

    description: str

    async def get(self, name: str) -> str | None: ...


class EnvironmentSecretSource:
    """Secrets from environment variables (app settings), read at call time."""

    description = "the environment"

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._environ = environ

    async def get(self, name: str) -> str | None:
        return self._environ.get(name) or None


def reference_name(value: Any) -> str | None:
    """`NAME` for a `"$NAME"` reference, else None."""
    if isinstance(value, str) and value.startswith("$") and len(value) > 1:
        return value[1:]
    return None


class SecretResolver:
    """Resolves references through a source, caching values (`StaleWhileRevalidate`).

    Concurrent look-ups of one name share a single source call, run as a task
    of its own: a caller that is cancelled (a client hung up) stops waiting,
    but the call goes on for the others. Past its TTL a value is still served
    at once while one background look-up refreshes it (so a rotation is
    picked up without a caller waiting on the vault); while the source fails
    the value known before is served for up to `stale_seconds` past its TTL,
    and the source asked again every `RETRY_SECONDS`, so a vault outage does
    not stop models whose secrets were known a moment ago. That a secret does
    not exist is remembered for `RETRY_SECONDS` (or the TTL, if shorter), so a
    missing secret costs one source call per period, not one per request, and
    a secret added later is found on the first call after that period (or,
    while the source fails, is still "missing").
    """

    def __init__(
        self,
        source: SecretSource,
        ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = 900.0,
    ) -> None:
        self.source = source
        self._values: StaleWhileRevalidate[str, str | None] = StaleWhileRevalidate(
            source.get,
            ttl_seconds=ttl_seconds,
            stale_seconds=stale_seconds,
            miss_seconds=min(ttl_seconds, RETRY_SECONDS),
            stale_misses=True,
            clock=clock,
            label=lambda name: f"secret ${name} from {source.description}",
        )

    async def resolve(self, name: str, *, model_id: str) -> str:
        value = await self.lookup(name)
        if value is None:
            raise ConfigurationError(
                f"Model '{model_id}' is misconfigured: secret reference ${name} "
                f"does not resolve in {self.source.description}."
            )
        return value

    async def lookup(self, name: str, *, fresh: bool = False) -> str | None:
        """The value of secret `name`, or None when the source has no such secret.

        `fresh`: no older than the TTL, waiting for the source if the value
        held is older (the value held is served only if the source fails)."""
        return await (self._values.fresh(name) if fresh else self._values.get(name))

    async def resolve_parameters(self, parameters: dict[str, Any], *, model_id: str) -> dict[str, Any]:
        """A copy of `parameters` with every reference replaced by its value."""
        resolved = dict(parameters)
        for key, value in parameters.items():
            name = reference_name(value)
            if name is not None:
                resolved[key] = await self.resolve(name, model_id=model_id)
        return resolved


def key_vault_name(name: str) -> str:
    """Key Vault secret names allow letters, digits and dashes: `_` is written `-`."""
    return name.replace("_", "-")


#: What Key Vault accepts as a secret name.
KEY_VAULT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class KeyVaultSecretSource:
    """Secrets from Azure Key Vault through the async client and `DefaultAzureCredential`.

    The client is created on first use and reused. A vault that cannot be
    reached is an error naming the vault, never a missing secret.
    """

    def __init__(self, vault_url: str, verify_challenge_resource: bool = True, timeout_seconds: float = 5.0) -> None:
        self.vault_url = vault_url
        self.timeout_seconds = timeout_seconds
        self.description = f"Key Vault {vault_url}"
        self._verify_challenge_resource = verify_challenge_resource
        self._client: Any = None
        self._credential: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from azure.identity.aio import DefaultAzureCredential
            from azure.keyvault.secrets.aio import SecretClient

            self._credential = DefaultAzureCredential()
            self._client = SecretClient(
                self.vault_url,
                self._credential,
                verify_challenge_resource=self._verify_challenge_resource,
            )
        return self._client

    async def get(self, name: str) -> str | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        if not KEY_VAULT_NAME.match(key_vault_name(name)):
            raise ConfigurationError(
                f"Secret reference ${name} is malformed: Key Vault secret names have 1 to 127 letters, "
                "digits, dashes (or underscores, written as dashes)."
            )
        try:
            async with asyncio.timeout(self.timeout_seconds):
                secret = await self._get_client().get_secret(key_vault_name(name))
        except ResourceNotFoundError:
            return None
        except TimeoutError:
            raise SecretStoreUnavailable(
                f"Secret reference ${name} could not be read: {self.description} did not answer in time."
            ) from None
        except AzureError as exc:
            raise ConfigurationError(
                f"Secret reference ${name} could not be read from {self.description} ({type(exc).__name__})."
            ) from None
        return secret.value

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            await self._credential.close()
            self._client = self._credential = None

"""The gate that makes API Management the only way in.

With API Management in front, the Function App keeps its public address (an
access restriction to the `ApiManagement` service tag would admit every APIM
instance in Azure, not only ours). So APIM adds a shared secret,
`X-APIM-Shared-Secret`, to every request it forwards, from a Key Vault named
value, and the app refuses any request that does not carry it. A caller
holding a project key therefore cannot skip APIM's subscription key, token
limit and token metrics by calling the app directly. Without the setting the
gate is open: local use, no APIM.

`APIM_SHARED_SECRET` holds the secret, or a `"$NAME"` reference the app reads
itself, through the gateway's secret resolver (Key Vault in Azure), like the
catalog's secret references: cached for `SECRET_TTL_SECONDS`, and served
from what was known before while the vault is briefly unreachable. Past the
TTL a secret is compared while it is refreshed in the background; a header
that matches none is compared once more with secrets read within the TTL, so
a rotation never refuses what API Management sends because an instance had
not been asked for a while. The app reads it with its own Key Vault
client, not through a platform Key Vault reference, which does not resolve
on Flex Consumption once the vault is network-restricted.
`APIM_SHARED_SECRET_PREVIOUS` (same forms, optional) is a second secret
accepted during a rotation, while API Management still sends the old one;
a reference to a secret that does not exist means "none".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

from .errors import ApiManagementRequired, ConfigurationError, GatewayError
from .secrets import SecretResolver, reference_name

logger = logging.getLogger(__name__)

HEADER = "x-apim-shared-secret"
SETTING = "APIM_SHARED_SECRET"
PREVIOUS_SETTING = "APIM_SHARED_SECRET_PREVIOUS"
#: Paths served without the secret. Liveness reads no catalog, no key and no
#: model, costs no tokens and tells nothing but "healthy" and the environment,
#: so a direct probe can tell "the app is down" from "APIM cannot reach it".
OPEN_PATHS = frozenset({"/health"})
#: What an app setting holds when the platform could not resolve its Key Vault reference.
_UNRESOLVED_REFERENCE = "@Microsoft.KeyVault("


def _digest(value: bytes) -> bytes:
    """Secrets are compared as SHA-256 digests: of equal length, so the time the
    comparison takes says nothing about the secret's length either."""
    return hashlib.sha256(value).digest()


class Gate:
    """Admits a request only when it carries the current or the previous shared
    secret (or the gate is open: no current secret configured)."""

    def __init__(self, secret: str | None, previous: str | None = None, secrets: SecretResolver | None = None) -> None:
        self._settings = {SETTING: secret, PREVIOUS_SETTING: previous if secret else None}
        self._secrets = secrets
        self._unresolved = sorted(
            name for name, value in self._settings.items() if value and value.startswith(_UNRESOLVED_REFERENCE)
        )
        for name in self._unresolved:
            logger.error(
                "%s holds a Key Vault reference the platform did not resolve; every request "
                "except %s is refused until it does (check the app's Key Vault access).",
                name,
                ", ".join(sorted(OPEN_PATHS)),
            )
        references = [name for name, value in self._settings.items() if reference_name(value)]
        #: Whether a header no secret matches is compared again with secrets read within the TTL.
        self._passes = (False, True) if references else (False,)
        if references and secrets is None:
            raise ConfigurationError(f"{' and '.join(references)} name a secret, but no secret source is configured.")

    async def refusal(self, path: str, headers: Mapping[str, str]) -> GatewayError | None:
        """Why the request may not pass, or None when it may."""
        if self._settings[SETTING] is None or path in OPEN_PATHS:
            return None
        if self._unresolved:
            return ConfigurationError(
                f"The gateway's {' and '.join(self._unresolved)} setting is an unresolved Key Vault reference."
            )
        # Header values arrive as latin-1 text: encoding them back gives the bytes that were sent.
        given = _digest(headers.get(HEADER, "").encode("latin-1", errors="replace"))
        try:
            # Secrets past their TTL are compared while they are refreshed; a header none of them
            # matches is compared again with secrets no older than the TTL (a rotation under way).
            for fresh in self._passes:
                accepted = [_digest(value.encode()) for value in await self._values(fresh)]
                # Every accepted secret is compared, so the time taken does not tell which one matched.
                if any([hmac.compare_digest(given, expected) for expected in accepted]):
                    return None
        except GatewayError as exc:  # the vault is unreachable, or the current secret is missing
            return exc
        return ApiManagementRequired(
            "Call this API through its API Management endpoint; direct calls to the app are refused."
        )

    async def _values(self, fresh: bool) -> list[str]:
        """The accepted secrets: the current one (required) and the previous one, if any;
        `fresh`: read no longer ago than the TTL (`SecretResolver.lookup`)."""
        values = []
        for setting, value in self._settings.items():
            name = reference_name(value)
            if name is not None:
                assert self._secrets is not None  # checked in __init__
                value = await self._secrets.lookup(name, fresh=fresh)
                if value is None and setting == SETTING:
                    raise ConfigurationError(
                        f"The gateway's {SETTING} setting names secret ${name}, "
                        f"which does not exist in {self._secrets.source.description}."
                    )
            if value:
                values.append(value)
        return values

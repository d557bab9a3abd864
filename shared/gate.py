"""The gate that makes API Management the only way in.

With API Management in front, the Function App keeps its public address (an
access restriction to the `ApiManagement` service tag would admit every APIM
instance in Azure, not only ours). So APIM adds a shared secret,
`X-APIM-Shared-Secret`, to every request it forwards, from a Key Vault named
value; the app reads the same secret from `APIM_SHARED_SECRET` (a Key Vault
reference) and refuses any request that does not carry it. A caller holding a
project key therefore cannot skip APIM's subscription key, token limit and
token metrics by calling the app directly. Without the setting the gate is
open: local use, no APIM.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

from .errors import ApiManagementRequired, ConfigurationError, GatewayError

logger = logging.getLogger(__name__)

HEADER = "x-apim-shared-secret"
SETTING = "APIM_SHARED_SECRET"
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
    """Admits a request only when it carries the shared secret (or the gate is open)."""

    def __init__(self, secret: str | None) -> None:
        self._expected = _digest(secret.encode()) if secret else None
        self._unresolved = secret is not None and secret.startswith(_UNRESOLVED_REFERENCE)
        if self._unresolved:
            logger.error(
                "%s holds a Key Vault reference the platform did not resolve; every request "
                "except %s is refused until it does (check the app's Key Vault access).",
                SETTING,
                ", ".join(sorted(OPEN_PATHS)),
            )

    def refusal(self, path: str, headers: Mapping[str, str]) -> GatewayError | None:
        """Why the request may not pass, or None when it may."""
        if self._expected is None or path in OPEN_PATHS:
            return None
        if self._unresolved:
            return ConfigurationError(f"The gateway's {SETTING} setting is an unresolved Key Vault reference.")
        # Header values arrive as latin-1 text: encoding them back gives the bytes that were sent.
        given = headers.get(HEADER, "").encode("latin-1", errors="replace")
        if hmac.compare_digest(_digest(given), self._expected):
            return None
        return ApiManagementRequired(
            "Call this API through its API Management endpoint; direct calls to the app are refused."
        )

"""The gateway's settings: the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Every app setting the gateway reads; infra and local.settings.json.example
#: must list each of them (tests/test_infra.py checks it).
SETTING_NAMES: tuple[str, ...] = (
    "COSMOS_URL",
    "COSMOS_KEY",
    "COSMOS_DATABASE_ID",
    "COSMOS_CONTAINER_ID",
    "COSMOS_PROJECTS_CONTAINER_ID",
    "COSMOS_USAGE_CONTAINER_ID",
    "COSMOS_LIMITS_CONTAINER_ID",
    "COSMOS_RESPONSES_CONTAINER_ID",
    "COSMOS_VERIFY_TLS",
    "MODELS_FILE",
    "PROJECTS_FILE",
    "USAGE_FILE",
    "RESPONSES_FILE",
    "KEY_VAULT_URL",
    "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE",
    "ALLOW_ANONYMOUS",
    "ENVIRONMENT",
    "CATALOG_TTL_SECONDS",
    "SECRET_TTL_SECONDS",
    "MAX_REQUEST_BYTES",
    "REQUEST_TIMEOUT_SECONDS",
    "STREAM_FIRST_BYTE_TIMEOUT_SECONDS",
    "UPSTREAM_CONNECT_SECONDS",
    "UPSTREAM_FIRST_BYTE_SECONDS",
    "STORE_TIMEOUT_SECONDS",
    "STORE_STALE_SECONDS",
    "APIM_SHARED_SECRET",
    "APIM_SHARED_SECRET_PREVIOUS",
    "USAGE_RETENTION_DAYS",
    "RESPONSES_RETENTION_DAYS",
)

#: Set by the platform (infra/modules/function-app.bicep), read here too:
#: telemetry is exported to Application Insights only when it is set.
TELEMETRY_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"

#: Default Cosmos container ids and their partition key paths. Usage records are
#: partitioned by project and UTC day (shared.usage.usage_partition); a container's
#: partition key cannot change, so this key came with a new container id
#: (the former `usage` container was partitioned on `/project`).
COSMOS_CONTAINERS: dict[str, str] = {
    "models": "/id",
    "projects": "/id",
    "usage-by-day": "/partition",
    "limits": "/id",
    #: Stored responses: each response (and the chunks of a large one) in a logical partition of its own.
    "responses": "/response_id",
}


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use."""


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if number < 0:
        raise SettingsError(f"{name} must not be negative, got {value!r}")
    return number


def _days(name: str, value: str) -> int | None:
    """A whole number of days; empty or 0 = none."""
    if not value.strip():
        return None
    days = _number(name, value)
    if not days.is_integer():
        raise SettingsError(f"{name} must be a whole number of days, got {value!r}")
    return int(days) or None


@dataclass(frozen=True)
class Settings:
    cosmos_url: str | None = None
    cosmos_key: str | None = field(default=None, repr=False)
    cosmos_database_id: str = "llm-proxy"
    cosmos_container_id: str = "models"
    cosmos_projects_container_id: str = "projects"
    cosmos_usage_container_id: str = "usage-by-day"
    #: The budget and rate limit counters (shared.limit_stores).
    cosmos_limits_container_id: str = "limits"
    cosmos_responses_container_id: str = "responses"
    cosmos_verify_tls: bool = True
    models_file: str = "models.json"
    projects_file: str = "projects.json"
    usage_file: str = "usage.jsonl"
    responses_file: str = "responses.jsonl"
    key_vault_url: str | None = None
    key_vault_verify_challenge_resource: bool = True
    allow_anonymous: bool = False
    environment: str = "development"
    catalog_ttl_seconds: float = 60.0
    secret_ttl_seconds: float = 300.0
    max_request_bytes: int = 26_214_400
    request_timeout_seconds: float = 230.0
    stream_first_byte_timeout_seconds: float = 60.0
    #: Per attempt on one deployment: the longest wait for its connection (TCP and TLS).
    upstream_connect_seconds: float = 5.0
    #: Per attempt on one deployment: the longest wait for a whole (non-streamed) answer to start arriving.
    upstream_first_byte_seconds: float = 120.0
    #: Longest wait for one Cosmos DB or Key Vault call.
    store_timeout_seconds: float = 5.0
    #: How long keys, the catalog and secrets known a moment ago are served while their store is down.
    store_stale_seconds: float = 900.0
    #: The secret API Management adds to every request, or a "$NAME" reference to it (shared.gate);
    #: unset = the gate is open.
    apim_shared_secret: str | None = field(default=None, repr=False)
    #: A second secret (or reference) the gate accepts while a rotation is under way.
    apim_shared_secret_previous: str | None = field(default=None, repr=False)
    applicationinsights_connection_string: str | None = None
    #: How long Cosmos keeps usage records (the container's default TTL); None = forever.
    usage_retention_days: int | None = None
    #: How long stored responses are kept (Cosmos's TTL, or the file store's age check); None = forever.
    responses_retention_days: int | None = 30

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        def text_or(name: str, default: str) -> str:
            return text(name) or default

        defaults = cls()
        return cls(
            cosmos_url=text("COSMOS_URL"),
            cosmos_key=text("COSMOS_KEY"),
            cosmos_database_id=text_or("COSMOS_DATABASE_ID", defaults.cosmos_database_id),
            cosmos_container_id=text_or("COSMOS_CONTAINER_ID", defaults.cosmos_container_id),
            cosmos_projects_container_id=text_or("COSMOS_PROJECTS_CONTAINER_ID", defaults.cosmos_projects_container_id),
            cosmos_usage_container_id=text_or("COSMOS_USAGE_CONTAINER_ID", defaults.cosmos_usage_container_id),
            cosmos_limits_container_id=text_or("COSMOS_LIMITS_CONTAINER_ID", defaults.cosmos_limits_container_id),
            cosmos_responses_container_id=text_or(
                "COSMOS_RESPONSES_CONTAINER_ID", defaults.cosmos_responses_container_id
            ),
            cosmos_verify_tls=_flag("COSMOS_VERIFY_TLS", env.get("COSMOS_VERIFY_TLS", "true")),
            models_file=text_or("MODELS_FILE", defaults.models_file),
            projects_file=text_or("PROJECTS_FILE", defaults.projects_file),
            usage_file=text_or("USAGE_FILE", defaults.usage_file),
            responses_file=text_or("RESPONSES_FILE", defaults.responses_file),
            key_vault_url=text("KEY_VAULT_URL"),
            key_vault_verify_challenge_resource=_flag(
                "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE",
                env.get("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", "true"),
            ),
            allow_anonymous=_flag("ALLOW_ANONYMOUS", env.get("ALLOW_ANONYMOUS", "false")),
            environment=text_or("ENVIRONMENT", defaults.environment),
            catalog_ttl_seconds=_number("CATALOG_TTL_SECONDS", env.get("CATALOG_TTL_SECONDS", "60")),
            secret_ttl_seconds=_number("SECRET_TTL_SECONDS", env.get("SECRET_TTL_SECONDS", "300")),
            request_timeout_seconds=_number("REQUEST_TIMEOUT_SECONDS", env.get("REQUEST_TIMEOUT_SECONDS", "230")),
            stream_first_byte_timeout_seconds=_number(
                "STREAM_FIRST_BYTE_TIMEOUT_SECONDS", env.get("STREAM_FIRST_BYTE_TIMEOUT_SECONDS", "60")
            ),
            upstream_connect_seconds=_number("UPSTREAM_CONNECT_SECONDS", env.get("UPSTREAM_CONNECT_SECONDS", "5")),
            upstream_first_byte_seconds=_number(
                "UPSTREAM_FIRST_BYTE_SECONDS", env.get("UPSTREAM_FIRST_BYTE_SECONDS", "120")
            ),
            store_timeout_seconds=_number("STORE_TIMEOUT_SECONDS", env.get("STORE_TIMEOUT_SECONDS", "5")),
            store_stale_seconds=_number("STORE_STALE_SECONDS", env.get("STORE_STALE_SECONDS", "900")),
            applicationinsights_connection_string=text(TELEMETRY_SETTING),
            max_request_bytes=int(_number("MAX_REQUEST_BYTES", env.get("MAX_REQUEST_BYTES", "26214400"))),
            apim_shared_secret=text("APIM_SHARED_SECRET"),
            apim_shared_secret_previous=text("APIM_SHARED_SECRET_PREVIOUS"),
            usage_retention_days=_days("USAGE_RETENTION_DAYS", env.get("USAGE_RETENTION_DAYS", "")),
            responses_retention_days=_days("RESPONSES_RETENTION_DAYS", env.get("RESPONSES_RETENTION_DAYS", "30")),
        )

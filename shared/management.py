"""Model management and usage reports: the admin API's use cases, and the
caller's own usage report.

The admin API lives under `/v1/admin/`: Azure Functions reserves routes that
start with `admin` for its host, so `/admin/...` cannot be served there. It is
for projects flagged `"admin": true` (see `shared.admin`
`keys create-project --admin`): one kind of credential for everything, managed
like every other key, instead of a separate shared secret.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from .catalog import Catalog
from .domain import Caller, InvalidCatalogEntry, LLMModel
from .errors import (
    CatalogUnavailable,
    InvalidRequest,
    KeyStoreUnavailable,
    ModelNotFound,
    PermissionDenied,
    ProjectNotFound,
    StoreUnavailable,
)
from .http import JSONResult
from .inbound import Inbound
from .limits import Limiter
from .projects import KEY_DOCUMENT_PREFIX, Authenticator, ProjectStore
from .quota import InvalidLimits, Scope, parse_limits, scope_of
from .usage import ANONYMOUS_PROJECT, MAX_REPORT_DAYS, UsageStore, summarize, utc_timestamp

logger = logging.getLogger(__name__)

GROUPINGS = ("model", "day")
DEFAULT_REPORT_DAYS = 30


def validate_model_document(document: Any, model_id: str | None = None) -> dict[str, Any]:
    """A catalog document checked for storage, or a 400 naming the bad field."""
    if not isinstance(document, dict):
        raise InvalidRequest("The model document must be a JSON object.")
    if model_id is not None and document.setdefault("id", model_id) != model_id:
        raise InvalidRequest(f"'id' is {document['id']!r} but the path names {model_id!r}.", param="id")
    try:
        LLMModel.from_document(document)
    except InvalidCatalogEntry as exc:
        raise InvalidRequest(str(exc), param=exc.field_name) from None
    return document


def _moment(inbound: Inbound, name: str, default: datetime) -> datetime:
    value = inbound.query.get(name)
    if not value:
        return default
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"'{name}' must be an ISO 8601 date or date-time, got {value!r}.", param=name) from None
    return moment


def validate_limits(value: Any) -> dict[str, Any]:
    """A `limits` object checked for storage, or a 400 naming the bad field (`limits.budget_period`)."""
    try:
        return parse_limits(value).document()
    except InvalidLimits as exc:
        raise InvalidRequest(str(exc), param=exc.field) from None


def _key_id(document: dict[str, Any]) -> str:
    """A key's id as the CLI shows it and its limits' scope names it: the first 12 characters of its hash."""
    return str(document["id"])[len(KEY_DOCUMENT_PREFIX) :][:12]


class Management:
    def __init__(
        self,
        catalog: Catalog,
        usage: UsageStore,
        authenticator: Authenticator,
        projects: ProjectStore,
        limiter: Limiter,
    ) -> None:
        self.catalog = catalog
        self.usage = usage
        self.authenticator = authenticator
        self.projects = projects
        self.limiter = limiter

    async def own_limits(self, inbound: Inbound) -> JSONResult:
        """The caller's limits in their current windows: what is spent, reserved, left, and when each resets."""
        caller = await self.authenticator.caller(inbound.headers)
        return JSONResult(await self._limits_report(caller.project or ANONYMOUS_PROJECT, caller.limits))

    async def project_limits(self, inbound: Inbound) -> JSONResult:
        """A project's limits and those of its keys, as `own_limits` reports them (admin)."""
        await self._admin(inbound)
        project = await self._project(inbound.path_param("project_id"))
        async with self._projects_store():
            keys = [
                d
                for d in await self.projects.documents()
                if d.get("type") == "key" and d.get("project") == project["id"]
            ]
        scopes = [scope_of(f"project:{project['id']}", project)]
        scopes += [scope_of(f"key:{_key_id(key)}", key) for key in keys]
        return JSONResult(await self._limits_report(project["id"], tuple(s for s in scopes if s is not None)))

    async def put_project_limits(self, inbound: Inbound) -> JSONResult:
        """Set a project's `limits`, or with `?key=<key id>` one of its keys' (admin); callers see them
        within the key cache's 60 s."""
        await self._admin(inbound)
        limits = validate_limits(await inbound.json())
        project, document = await self._limited(inbound)
        async with self._projects_store():
            await self.projects.upsert(document | {"limits": limits})
        return JSONResult({"object": "limits", "project": project, "key": inbound.query.get("key"), "limits": limits})

    async def delete_project_limits(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        project, document = await self._limited(inbound)
        async with self._projects_store():
            await self.projects.upsert({key: value for key, value in document.items() if key != "limits"})
        return JSONResult({"object": "limits", "project": project, "key": inbound.query.get("key"), "limits": None})

    async def _limited(self, inbound: Inbound) -> tuple[str, dict[str, Any]]:
        """The project the path names and the document whose limits change: the project's, or its key's."""
        project = await self._project(inbound.path_param("project_id"))
        wanted = inbound.query.get("key")
        if not wanted:
            return project["id"], project
        async with self._projects_store():
            documents = await self.projects.documents()
        keys = [
            d
            for d in documents
            if d.get("type") == "key" and d.get("project") == project["id"] and _key_id(d).startswith(wanted)
        ]
        if len(keys) != 1:
            raise InvalidRequest(
                f"{len(keys) or 'No'} keys of project '{project['id']}' match '{wanted}'.", param="key"
            )
        return project["id"], {key: value for key, value in keys[0].items() if not key.startswith("_")}

    async def _limits_report(self, project: str, scopes: tuple[Scope, ...]) -> dict[str, Any]:
        return {"object": "limits", "project": project, "data": await self.limiter.report(scopes)}

    async def _project(self, project_id: str) -> dict[str, Any]:
        async with self._projects_store():
            project = await self.projects.read(project_id)
        if project is None or project.get("type") != "project":
            raise ProjectNotFound(project_id)
        return {key: value for key, value in project.items() if not key.startswith("_")}

    @asynccontextmanager
    async def _projects_store(self) -> AsyncIterator[None]:
        try:
            yield
        except Exception as exc:
            logger.warning("the admin API's use of %s failed (%s)", self.projects.description, type(exc).__name__)
            raise KeyStoreUnavailable(f"Projects cannot be read: {self.projects.description} is unavailable.") from exc

    async def own_usage(self, inbound: Inbound) -> JSONResult:
        caller = await self.authenticator.caller(inbound.headers)
        return await self._report(inbound, caller.project or ANONYMOUS_PROJECT)

    async def project_usage(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        project = inbound.query.get("project")
        if not project:
            raise InvalidRequest("'project' is required.", param="project")
        return await self._report(inbound, project)

    async def list_models(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        async with self._catalog_store():
            documents = sorted(await self.catalog.source.load(), key=lambda d: str(d.get("id")))
        return JSONResult({"object": "list", "data": documents})

    async def get_model(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        return JSONResult(await self._document(inbound.path_param("model_id")))

    async def put_model(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        model_id = inbound.path_param("model_id")
        document = validate_model_document(await inbound.json(), model_id)
        async with self._catalog_store():
            existed = any(d.get("id") == model_id for d in await self.catalog.source.load())
            await self.catalog.source.save(document)
        await self.catalog.reload()
        return JSONResult(document, status=200 if existed else 201)

    async def delete_model(self, inbound: Inbound) -> JSONResult:
        await self._admin(inbound)
        model_id = inbound.path_param("model_id")
        async with self._catalog_store():
            removed = await self.catalog.source.remove(model_id)
        if not removed:
            raise ModelNotFound(model_id)
        await self.catalog.reload()
        return JSONResult({"id": model_id, "object": "model", "deleted": True})

    async def _admin(self, inbound: Inbound) -> Caller:
        caller = await self.authenticator.caller(inbound.headers)
        if not caller.admin:
            raise PermissionDenied("This endpoint needs the key of a project flagged as admin.")
        return caller

    @asynccontextmanager
    async def _catalog_store(self) -> AsyncIterator[None]:
        """A use of the catalog's store: its failure is the gateway's 503
        `catalog_unavailable`, as for a catalog that cannot be loaded."""
        try:
            yield
        except Exception as exc:
            logger.warning("the admin API's use of %s failed (%s)", self.catalog.source.description, type(exc).__name__)
            raise CatalogUnavailable(
                f"The model catalog is unavailable ({self.catalog.source.description}). Try again later."
            ) from exc

    async def _document(self, model_id: str) -> dict[str, Any]:
        async with self._catalog_store():
            documents = await self.catalog.source.load()
        for document in documents:
            if document.get("id") == model_id:
                return document
        raise ModelNotFound(model_id)

    async def _report(self, inbound: Inbound, project: str) -> JSONResult:
        end = _moment(inbound, "end", datetime.now(UTC))
        try:
            start = _moment(inbound, "start", end - timedelta(days=DEFAULT_REPORT_DAYS))
        except OverflowError:
            raise InvalidRequest(
                f"'end' is too early for the default {DEFAULT_REPORT_DAYS}-day report; give 'start' too.", param="end"
            ) from None
        if start > end:
            raise InvalidRequest("'start' must not be after 'end'.", param="start")
        if end - start > timedelta(days=MAX_REPORT_DAYS):
            raise InvalidRequest(f"A report covers at most {MAX_REPORT_DAYS} days: ask for several.", param="start")
        group_by = inbound.query.get("group_by") or None
        if group_by is not None and group_by not in GROUPINGS:
            raise InvalidRequest(f"'group_by' must be one of: {', '.join(GROUPINGS)}.", param="group_by")
        try:
            records = await self.usage.query(project, utc_timestamp(start), utc_timestamp(end))
        except Exception as exc:
            raise StoreUnavailable(f"Usage cannot be read: {self.usage.description} is unavailable.") from exc
        return JSONResult(
            {
                "object": "usage",
                "project": project,
                "start": utc_timestamp(start),
                "end": utc_timestamp(end),
                "group_by": group_by,
                "data": summarize(records, group_by),
                "total": (
                    summarize(records, None)
                    or [{"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": 0.0}]
                )[0],
            }
        )

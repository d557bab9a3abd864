"""The model catalog: where documents come from, and its in-memory cache."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .cache import StaleWhileRevalidate
from .cosmos import CosmosDatabase
from .domain import InvalidCatalogEntry, LLMModel, Operation
from .errors import CatalogUnavailable, ModelNotFound, UnsupportedOperation

logger = logging.getLogger(__name__)

#: Fields Cosmos adds to every document; not part of the catalog contract.
COSMOS_SYSTEM_FIELDS = frozenset({"_rid", "_self", "_etag", "_attachments"})

#: How long a name the store does not hold is answered "not found" without asking the store again.
MISS_SECONDS = 5.0
#: Most names remembered as not found at once: callers choose them.
MISSES_KEPT = 10_000

#: A model by id (within its own partition), then by `code`: how the seed finds a model.
_BY_ID = "SELECT * FROM c WHERE c.id = @name"
_BY_CODE = "SELECT TOP 1 * FROM c WHERE c.code = @name"


class CatalogSource(Protocol):
    """Where catalog documents live. Every method raises when the store fails."""

    description: str

    async def load(self) -> list[dict[str, Any]]: ...

    async def lookup(self, name: str) -> dict[str, Any] | None:
        """The document whose `id`, or else whose `code`, is `name`; None when there is none."""
        ...

    async def save(self, document: dict[str, Any]) -> None: ...

    async def remove(self, model_id: str) -> bool:
        """Delete a document; False when there was none."""
        ...


class FileCatalogSource:
    """A JSON file holding a list of catalog documents (the local default)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"catalog file {self.path}"

    async def load(self) -> list[dict[str, Any]]:
        documents = json.loads(await asyncio.to_thread(self.path.read_text, encoding="utf-8"))
        if not isinstance(documents, list):
            raise ValueError(f"{self.path} must hold a JSON list of model documents")
        return documents

    async def lookup(self, name: str) -> dict[str, Any] | None:
        documents = await self.load()
        by_id = (d for d in documents if d.get("id") == name)
        by_code = (d for d in documents if d.get("code") == name)
        return next(by_id, None) or next(by_code, None)

    def _write(self, documents: list[dict[str, Any]]) -> None:
        self.path.write_text(json.dumps(documents, indent=2) + "\n", encoding="utf-8")

    async def save(self, document: dict[str, Any]) -> None:
        existing = await self.load() if self.path.exists() else []
        documents = [d for d in existing if d.get("id") != document["id"]]
        await asyncio.to_thread(self._write, [*documents, document])

    async def remove(self, model_id: str) -> bool:
        documents = await self.load()
        kept = [d for d in documents if d.get("id") != model_id]
        if len(kept) == len(documents):
            return False
        await asyncio.to_thread(self._write, kept)
        return True


class CosmosCatalogSource:
    """The `models` container of the Cosmos database."""

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def load(self) -> list[dict[str, Any]]:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            return [_catalog_fields(item) async for item in container.query_items("SELECT * FROM c")]

    async def lookup(self, name: str) -> dict[str, Any] | None:
        """By id, with a query confined to the one partition that id keys (the
        partition key is the id), then by `code` across partitions. Not a point
        read: the test Cosmos server answers the point read of a missing item
        with 500, where Cosmos answers 404."""
        parameters: list[dict[str, object]] = [{"name": "@name", "value": name}]
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            async for item in container.query_items(_BY_ID, parameters=parameters, partition_key=name):
                return _catalog_fields(item)
            async for item in container.query_items(_BY_CODE, parameters=parameters):
                return _catalog_fields(item)
            return None

    async def save(self, document: dict[str, Any]) -> None:
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            await container.upsert_item(document)

    async def remove(self, model_id: str) -> bool:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            try:
                await container.delete_item(model_id, partition_key=model_id)
            except CosmosResourceNotFoundError:
                return False
            return True


def _catalog_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in COSMOS_SYSTEM_FIELDS}


class _Models:
    """One load of the catalog, by id and by code; models found by a look-up join it."""

    def __init__(self, models: list[LLMModel]) -> None:
        self.by_id: dict[str, LLMModel] = {}
        self.by_code: dict[str, LLMModel] = {}
        for model in models:
            self.add(model)

    def add(self, model: LLMModel) -> None:
        self.by_id[model.id] = model
        self.by_code.setdefault(model.code, model)

    def find(self, name: str) -> LLMModel | None:
        return self.by_id.get(name) or self.by_code.get(name)


class Catalog:
    """Catalog entries cached in memory (`StaleWhileRevalidate`).

    The first use waits for a load; after `ttl_seconds` the loaded catalog is
    served at once while one background load refreshes it, for up to
    `stale_seconds` more while the store fails; then callers wait for a load
    again. A name the catalog does not hold is looked up in the store directly
    (`CatalogSource.lookup`, one look-up per name at a time), so a model added
    to the store, through any instance, is found on the next call; a name the
    store does not hold either is answered "not found" for `miss_seconds`
    without asking again (at most `MISSES_KEPT` names at once: they come from
    callers). A store that fails is an error, never an empty catalog or a
    missing model.
    """

    def __init__(
        self,
        source: CatalogSource,
        ttl_seconds: float = 60.0,
        *,
        miss_seconds: float = MISS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        stale_seconds: float = 900.0,
    ) -> None:
        self.source = source
        self._models: StaleWhileRevalidate[None, _Models] = StaleWhileRevalidate(
            lambda _: self._load(),
            ttl_seconds=ttl_seconds,
            stale_seconds=stale_seconds,
            clock=clock,
            label=lambda _: f"the catalog from {source.description}",
        )
        #: Names the loaded catalog does not hold: only misses are kept, a model found joins `_models`.
        self._names: StaleWhileRevalidate[str, LLMModel | None] = StaleWhileRevalidate(
            self._look_up, ttl_seconds=0.0, miss_seconds=miss_seconds, max_entries=MISSES_KEPT, clock=clock
        )

    async def find(self, model_id: str) -> LLMModel | None:
        """The entry whose `id`, or else whose `code`, is `model_id`."""
        model = (await self._loaded()).find(model_id)
        if model is not None:
            return model
        try:
            return await self._names.get(model_id)
        except Exception as exc:
            raise self._unavailable() from exc

    async def visible(self, project: str | None, model_id: str) -> LLMModel:
        """The entry `model_id` names, if `project` may use it; else the 404 of a model there is not."""
        model = await self.find(model_id)
        if model is None or not model.is_available_for_project(project):
            raise ModelNotFound(model_id)
        return model

    async def models_for(self, project: str | None, model_id: str, operation: Operation) -> list[LLMModel]:
        """The model `project` asks for `operation`, then those of its fallbacks
        (`fallbacks`) that `project` may use for it too."""
        model = await self.visible(project, model_id)
        if not model.supports_operation(operation):
            raise UnsupportedOperation(
                f"Model '{model.id}' does not support the operation '{operation.value}'. "
                f"It supports: {', '.join(op.value for op in model.operations) or 'nothing'}.",
                param="model",
            )
        return [model] + [
            fallback
            for fallback in self.fallbacks(model)
            if fallback.is_available_for_project(project) and fallback.supports_operation(operation)
        ]

    def fallbacks(self, model: LLMModel) -> list[LLMModel]:
        """The entries `model.fallbacks` names that the cache holds, in order. A
        name it does not hold is skipped, never waited for: it is looked up in
        the background, and a warning names it if the store does not hold it
        either, so a broken fallback costs the call neither time nor an outage."""
        loaded = self._models.cached(None)
        found = []
        for name in model.fallbacks:
            if loaded is not None and (fallback := loaded.value.find(name)) is not None:
                found.append(fallback)
            elif self._names.cached(name) is None and (lookup := self._names.prefetch(name)) is not None:
                lookup.add_done_callback(functools.partial(_warn_if_missing, model.id, name))
        return found

    async def reload(self) -> None:
        """Refresh now (after a change made through this instance)."""
        await self._loaded(now=True)

    async def entries(self) -> list[LLMModel]:
        return list((await self._loaded()).by_id.values())

    async def _loaded(self, *, now: bool = False) -> _Models:
        try:
            return await (self._models.refresh(None) if now else self._models.get(None))
        except Exception as exc:
            raise self._unavailable() from exc

    def _unavailable(self) -> CatalogUnavailable:
        return CatalogUnavailable(f"The model catalog is unavailable ({self.source.description}). Try again later.")

    async def _look_up(self, name: str) -> LLMModel | None:
        """Ask the store for `name`; a model it holds joins the loaded catalog."""
        try:
            document = await self.source.lookup(name)
        except Exception:
            logger.warning("catalog look-up of %r in %s failed", name, self.source.description, exc_info=True)
            raise
        model = None if document is None else _valid(document)
        if model is not None and (loaded := self._models.cached(None)) is not None:
            loaded.value.add(model)
            logger.info("found model %r in %s (not in the cached catalog)", model.id, self.source.description)
        return model

    async def _load(self) -> _Models:
        try:
            documents = await self.source.load()
        except Exception:
            logger.warning("catalog load from %s failed", self.source.description, exc_info=True)
            raise
        models = _Models([model for document in documents if (model := _valid(document)) is not None])
        logger.info("loaded %d models from %s", len(models.by_id), self.source.description)
        return models


def _valid(document: dict[str, Any]) -> LLMModel | None:
    """The entry of `document`, or None (and an error logged) when it is invalid."""
    try:
        return LLMModel.from_document(document)
    except InvalidCatalogEntry as exc:
        logger.error("skipping invalid %s", exc)
        return None


def _warn_if_missing(model_id: str, fallback: str, task: asyncio.Task[LLMModel | None]) -> None:
    """Report a fallback the store does not hold (a failed look-up is `_look_up`'s to report)."""
    if not task.cancelled() and task.exception() is None and task.result() is None:
        logger.warning("model %r names the fallback %r, which is not in the catalog: it is skipped", model_id, fallback)

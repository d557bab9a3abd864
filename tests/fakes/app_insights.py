"""A fake Application Insights ingestion endpoint (`IngestionEndpoint=` in a
connection string): it accepts the Azure Monitor exporter's `POST .../track`
batches and keeps every envelope it received."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class FakeIngestion:
    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        #: Every request body as received, to search for what must never be sent.
        self.raw: list[bytes] = []
        self.url = ""
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._track, methods=["POST"])])

    async def _track(self, request: Request) -> JSONResponse:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        batch = json.loads(body)
        with self._lock:
            self.raw.append(body)
            self.envelopes.extend(batch)
        return JSONResponse({"itemsReceived": len(batch), "itemsAccepted": len(batch), "errors": []})

    def of_type(self, base_type: str) -> list[dict[str, Any]]:
        """The envelopes whose `data.baseType` is `base_type` (RequestData, RemoteDependencyData, MetricData)."""
        with self._lock:
            return [e for e in self.envelopes if e.get("data", {}).get("baseType") == base_type]

    def summary(self) -> list[tuple[str, str, str | None, str | None]]:
        """(type, name, operation id, parent id) of each envelope, to say what did arrive."""
        with self._lock:
            return [
                (
                    e["data"]["baseType"],
                    str(e["data"]["baseData"].get("name")),
                    e.get("tags", {}).get("ai.operation.id"),
                    e.get("tags", {}).get("ai.operation.parentId"),
                )
                for e in self.envelopes
            ]

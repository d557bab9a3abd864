"""A proxy in front of the Cosmos DB test server that answers document writes with Cosmos's error answers.

The npm server never answers 403 "partition full", 403 "no role yet" or 429:
this proxy forwards every request to it (plain HTTP in, HTTPS out) and, while
a fault is set, answers the matching document writes itself with the status,
the `x-ms-substatus` header and the body Cosmos sends; while a `Delay` is set,
it forwards the requests to one container only after a pause (a slow store). It also points the
account's endpoints at itself, so the SDK keeps talking through it, and keeps
every request it saw for tests to read.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import httpx

from tests.fakes.server import RecordedRequest, ServerThread

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Fault:
    """Answer `status`/`substatus` to the document writes it matches (all, or one partition, or one id)."""

    status: int
    substatus: int = 0
    partition: str | None = None
    document_id: str | None = None

    def matches(self, request: RecordedRequest) -> bool:
        if self.partition is not None and partition_of(request) != self.partition:
            return False
        return self.document_id is None or (request.json or {}).get("id") == self.document_id


@dataclass
class Delay:
    """Forward each request to the container `container_id` after `low` to `high` seconds (drawn uniformly)."""

    low: float
    high: float
    container_id: str

    def matches(self, request: RecordedRequest) -> bool:
        return f"/colls/{self.container_id}/" in request.path or request.path.endswith(f"/colls/{self.container_id}")


def partition_of(request: RecordedRequest) -> str | None:
    header = request.headers.get("x-ms-documentdb-partitionkey")
    return json.loads(header)[0] if header else None


def is_document_write(request: RecordedRequest) -> bool:
    return (
        request.method == "POST"
        and request.path.rstrip("/").endswith("/docs")
        and request.headers.get("x-ms-documentdb-isquery", "").lower() != "true"
    )


def is_query(request: RecordedRequest) -> bool:
    return request.method == "POST" and request.path.rstrip("/").endswith("/docs") and not is_document_write(request)


class FaultyCosmos:
    """The proxy app; `start()` serves it on a free loopback port (`url`)."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.faults: list[Fault] = []
        self.delay: Delay | None = None
        self.requests: list[RecordedRequest] = []
        #: Document writes answered with a fault.
        self.refused: list[RecordedRequest] = []
        self._server = ServerThread(self)
        self.url = self._server.url

    def start(self) -> FaultyCosmos:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def queries(self) -> list[RecordedRequest]:
        return [request for request in self.requests if is_query(request)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        request = RecordedRequest(scope["method"], scope["path"], {}, headers, body)
        try:
            request.json = json.loads(body) if body else None
        except ValueError:
            request.json = None
        self.requests.append(request)
        if is_document_write(request):
            for fault in self.faults:
                if fault.matches(request):
                    self.refused.append(request)
                    await self._answer(send, fault)
                    return
        if self.delay is not None and self.delay.matches(request):
            await asyncio.sleep(random.uniform(self.delay.low, self.delay.high))
        async with httpx.AsyncClient(verify=False, timeout=30) as client:
            response = await client.request(
                scope["method"],
                f"{self.upstream_url}{scope['raw_path'].decode()}" + (f"?{query}" if query else ""),
                headers={key: value for key, value in headers.items() if key not in _HOP_HEADERS},
                content=body,
            )
        content = response.content
        if scope["method"] == "GET" and scope["path"] == "/" and response.status_code == 200:
            account = response.json()
            for locations in ("writableLocations", "readableLocations"):
                for location in account.get(locations, []):
                    location["databaseAccountEndpoint"] = f"{self.url}/"
            content = json.dumps(account).encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (key.encode(), value.encode())
                    for key, value in response.headers.items()
                    if key.lower() not in _HOP_HEADERS | {"content-encoding"}
                ]
                + [(b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    async def _answer(send: Any, fault: Fault) -> None:
        body = json.dumps({"code": str(fault.status), "message": f"injected {fault.status}/{fault.substatus}"})
        headers = [
            (b"content-type", b"application/json"),
            (b"x-ms-substatus", str(fault.substatus).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        if fault.status == 429:
            headers.append((b"x-ms-retry-after-ms", b"1"))
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})

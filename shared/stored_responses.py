"""Stored responses: what `store: true` (OpenAI's default) keeps, for `previous_response_id`,
`GET` / `DELETE /v1/responses/{id}` and `/input_items`.

A stored response holds the answer as the caller got it, the input of its
call, and the conversation before that input (the input and output of the
responses it continues), so a continuation is one point read, whoever
answered the earlier turns: the gateway sends the provider the whole
conversation, never an id the provider would have to know. Only the project
that created a response sees it; to any other it does not exist (404).

`ResponseHistory` is what the gateway's use cases call; the stores keep the
documents: Cosmos (`CosmosResponseStore`, one logical partition per
response, its time to live the retention) or, locally, a JSON-lines file
(`FileResponseStore`). A response is written before its answer (or a
stream's last event) is sent, so the very next call, on any instance, can
continue it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .cosmos import CosmosDatabase
from .domain import Caller
from .errors import GatewayError, InvalidRequest, StoreUnavailable
from .wire import Event

logger = logging.getLogger(__name__)

_DAY_SECONDS = 86_400
#: The largest piece of a stored response's JSON kept in one Cosmos document: Cosmos takes
#: documents up to 2 MB, and a JSON string may double in size when its quotes are escaped.
CHUNK_CHARACTERS = 900_000
#: Stored responses are only read by their id (the partition key, which `_documents` filters on):
#: nothing else is indexed (infra/modules/cosmos.bicep declares the same).
RESPONSES_INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/response_id/?"}],
    "excludedPaths": [{"path": "/*"}],
}
#: `/input_items` page sizes (OpenAI's).
DEFAULT_PAGE, MAX_PAGE = 20, 100


class ResponseNotFound(GatewayError):
    """No stored response of this id that the caller may see."""

    status = 404
    type = "invalid_request_error"
    code = "response_not_found"

    def __init__(self, response_id: str, param: str | None = None) -> None:
        super().__init__(f"Response with id '{response_id}' not found.", param=param)


class ResponseStoreUnavailable(StoreUnavailable):
    code = "response_store_unavailable"


@dataclass
class StoredResponse:
    id: str
    project: str | None
    #: The `Response` as the caller got it.
    response: dict[str, Any]
    #: This call's input items as the caller sent them (a string input as a user message).
    input: list[dict[str, Any]]
    #: The ids `/input_items` gives those items.
    input_ids: list[str]
    #: The conversation before this call's input: the inputs and outputs of the responses it continues.
    context: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = 0

    def conversation(self) -> list[dict[str, Any]]:
        """Everything a continuation of this response sends before its own input."""
        return [*self.context, *self.input, *_replayable(self.response.get("output") or [])]

    def content(self) -> dict[str, Any]:
        return {
            "response": self.response,
            "input": self.input,
            "input_ids": self.input_ids,
            "context": self.context,
        }

    @classmethod
    def from_content(
        cls, response_id: str, project: str | None, created_at: int, content: Mapping[str, Any]
    ) -> StoredResponse:
        return cls(
            response_id,
            project,
            content["response"],
            content["input"],
            content["input_ids"],
            content["context"],
            created_at,
        )


def _replayable(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items a provider takes back as input: a reasoning item only with its encrypted content
    (its id alone means nothing to a provider that did not store it)."""
    return [item for item in output if item.get("type") != "reasoning" or item.get("encrypted_content")]


class ResponseStore(Protocol):
    description: str

    async def put(self, stored: StoredResponse) -> None: ...

    async def get(self, response_id: str) -> StoredResponse | None: ...

    async def delete(self, response_id: str) -> bool: ...


class FileResponseStore:
    """Stored responses as JSON lines in a file (the local default): each line a stored response or a
    deletion, the last line for an id wins; a response older than the retention is not found."""

    def __init__(self, path: str | Path, retention_days: int | None) -> None:
        self.path = Path(path)
        self.retention_seconds = retention_days * _DAY_SECONDS if retention_days else None
        self.description = f"responses file {self.path}"
        self._lock = asyncio.Lock()

    def _append(self, line: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")

    def _find(self, response_id: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        found = None
        with self.path.open(encoding="utf-8") as file:
            for line in file:
                if f'"{response_id}"' in line:
                    entry = json.loads(line)
                    if entry["id"] == response_id:
                        found = None if entry.get("deleted") else entry
        return found

    async def put(self, stored: StoredResponse) -> None:
        line = {"id": stored.id, "project": stored.project, "created_at": stored.created_at} | stored.content()
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    async def get(self, response_id: str) -> StoredResponse | None:
        entry = await asyncio.to_thread(self._find, response_id)
        if entry is None:
            return None
        if self.retention_seconds is not None and entry["created_at"] + self.retention_seconds < time.time():
            return None
        return StoredResponse.from_content(entry["id"], entry["project"], entry["created_at"], entry)

    async def delete(self, response_id: str) -> bool:
        async with self._lock:
            if await self.get(response_id) is None:
                return False
            await asyncio.to_thread(self._append, {"id": response_id, "deleted": True})
        return True


class CosmosResponseStore:
    """The Cosmos responses container (partition key `/response_id`).

    A response is one document, `id` and `response_id` its id, in a logical
    partition of its own, written by point writes and read by a query scoped
    to that one partition (never across partitions). A
    response whose JSON is larger than `CHUNK_CHARACTERS` (an image-heavy
    conversation, say) is kept in chunk documents of the same partition
    (`<id>:1`, `<id>:2`...), written before the head document that counts them,
    so a response is readable only once it is whole. The container's default
    TTL (`RESPONSES_RETENTION_DAYS`) deletes them.
    """

    def __init__(self, database: CosmosDatabase, container_id: str) -> None:
        self.database = database
        self.container_id = container_id
        self.description = f"Cosmos container {container_id}"

    async def put(self, stored: StoredResponse) -> None:
        text = json.dumps(stored.content(), separators=(",", ":"))
        head: dict[str, Any] = {
            "id": stored.id,
            "response_id": stored.id,
            "project": stored.project,
            "created_at": stored.created_at,
        }
        chunks = [text[start : start + CHUNK_CHARACTERS] for start in range(0, len(text), CHUNK_CHARACTERS)]
        async with self.database.timeout():
            container = await self.database.container(self.container_id)
            if len(chunks) == 1:
                await container.upsert_item(head | {"content": stored.content()})
                return
            await asyncio.gather(
                *(
                    container.upsert_item({"id": f"{stored.id}:{number}", "response_id": stored.id, "text": chunk})
                    for number, chunk in enumerate(chunks, 1)
                )
            )
            await container.upsert_item(head | {"chunks": len(chunks)})

    async def _documents(self, response_id: str) -> dict[str, dict[str, Any]]:
        """The response's documents by id: its whole logical partition, read by one query scoped
        to it (the npm Cosmos DB server the tests use answers a point read of a missing item
        with a 500 instead of Cosmos's 404)."""
        container = await self.database.container(self.container_id)
        items = container.query_items(
            "SELECT * FROM c WHERE c.response_id = @id",
            parameters=[{"name": "@id", "value": response_id}],
            partition_key=response_id,
        )
        return {item["id"]: item async for item in items}

    async def get(self, response_id: str) -> StoredResponse | None:
        async with self.database.timeout():
            documents = await self._documents(response_id)
        head = documents.get(response_id)
        if head is None:
            return None
        content = head.get("content")
        if content is None:
            pieces = [documents[f"{response_id}:{number}"]["text"] for number in range(1, head["chunks"] + 1)]
            content = json.loads("".join(pieces))
        return StoredResponse.from_content(response_id, head.get("project"), head.get("created_at", 0), content)

    async def delete(self, response_id: str) -> bool:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        async with self.database.timeout():
            documents = await self._documents(response_id)
            if response_id not in documents:
                return False
            container = await self.database.container(self.container_id)
            # The head first: once it is gone, the response is gone, whatever happens to its chunks.
            for document_id in sorted(documents, key=lambda found: found != response_id):
                with contextlib.suppress(CosmosResourceNotFoundError):  # another instance deleted it meanwhile
                    await container.delete_item(document_id, partition_key=response_id)
        return True


@dataclass
class Turn:
    """One call of the Responses API: what goes to the provider, and what is kept of it."""

    caller: Caller
    #: The body sent on: the whole conversation as `input`, without `previous_response_id`.
    body: dict[str, Any]
    previous_response_id: str | None
    store: bool
    input: list[dict[str, Any]]
    context: list[dict[str, Any]]


class ResponseHistory:
    """The stored responses as the gateway's use cases see them (see the module's docstring)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def find(self, caller: Caller, response_id: str, param: str | None = None) -> StoredResponse:
        """The caller's stored response `response_id`; 404 if there is none the caller may see."""
        try:
            stored = await self.store.get(response_id)
        except Exception as exc:
            raise _unavailable(self.store, exc) from None
        if stored is None or stored.project != caller.project:
            raise ResponseNotFound(response_id, param)
        return stored

    async def turn(self, caller: Caller, body: dict[str, Any]) -> Turn:
        """The call `body` asks for, its `previous_response_id` resolved into the conversation before it."""
        given = body["input"]
        own_input = [{"role": "user", "content": given}] if isinstance(given, str) else list(given)
        previous_id = body.get("previous_response_id")
        context: list[dict[str, Any]] = []
        if previous_id is not None:
            context = (await self.find(caller, previous_id, "previous_response_id")).conversation()
        sent = {key: value for key, value in body.items() if key != "previous_response_id"}
        # The gateway keeps the conversation: the provider is sent all of it, and stores nothing.
        sent |= {"input": [*context, *own_input] if context else given, "store": False}
        return Turn(caller, sent, previous_id, body.get("store", True) is not False, own_input, context)

    async def keep(self, turn: Turn, response: dict[str, Any]) -> dict[str, Any]:
        """The response for the caller (its `previous_response_id` and `store` as the caller sent them),
        stored first when the caller asked for it."""
        answer = _for_caller(turn, response)
        if turn.store:
            stored = StoredResponse(
                answer["id"],
                turn.caller.project,
                answer,
                turn.input,
                [_item_id(item) for item in turn.input],
                turn.context,
                int(answer.get("created_at") or time.time()),
            )
            try:
                await self.store.put(stored)
            except Exception as exc:
                raise _unavailable(self.store, exc) from None
        return answer

    async def kept(self, turn: Turn, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        """A stream's events for the caller; the response is stored before its last event is sent."""
        try:
            async for name, payload in events:
                response = payload.get("response") if isinstance(payload, dict) else None
                if isinstance(response, dict) and name in ("response.completed", "response.incomplete"):
                    payload = payload | {"response": await self.keep(turn, response)}
                elif isinstance(response, dict):
                    payload = payload | {"response": _for_caller(turn, response)}
                yield name, payload
        finally:
            await events.aclose()

    async def delete(self, caller: Caller, response_id: str) -> dict[str, Any]:
        await self.find(caller, response_id)
        try:
            deleted = await self.store.delete(response_id)
        except Exception as exc:
            raise _unavailable(self.store, exc) from None
        if not deleted:  # another call deleted it meanwhile
            raise ResponseNotFound(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    @staticmethod
    def input_items(stored: StoredResponse, query: Mapping[str, str]) -> dict[str, Any]:
        """A page of the input items of `stored` (OpenAI's `limit`, `order`, `after`)."""
        limit = _page_size(query.get("limit"))
        order = query.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise InvalidRequest("'order' must be asc or desc.", param="order")
        items = [_listed(item, item_id) for item, item_id in zip(stored.input, stored.input_ids, strict=True)]
        if order == "desc":
            items.reverse()
        after = query.get("after")
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "",
            "has_more": len(items) > limit,
        }


async def replayed(response: dict[str, Any]) -> AsyncGenerator[Event, None]:
    """A stored response as the stream events that produce it (`GET /v1/responses/{id}?stream=true`):
    each output item added, its text or arguments as one delta, done; then the response itself."""
    sequence = 0

    def event(kind: str, **fields: Any) -> Event:
        nonlocal sequence
        sequence += 1
        return kind, {"type": kind, "sequence_number": sequence - 1} | fields

    started = {key: value for key, value in response.items() if key != "usage"}
    started |= {"status": "in_progress", "output": [], "incomplete_details": None}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, item in enumerate(response.get("output") or []):
        kind = item.get("type")
        if kind == "message":
            yield event(
                "response.output_item.added", output_index=index, item=item | {"status": "in_progress", "content": []}
            )
            for position, part in enumerate(item.get("content") or []):
                where = {"item_id": item["id"], "output_index": index, "content_index": position}
                if part.get("type") == "output_text":
                    yield event("response.content_part.added", **where, part=part | {"text": ""})
                    yield event("response.output_text.delta", **where, delta=part["text"], logprobs=[])
                    yield event("response.output_text.done", **where, text=part["text"], logprobs=[])
                else:
                    yield event("response.content_part.added", **where, part=part)
                yield event("response.content_part.done", **where, part=part)
        elif kind == "function_call":
            at = {"item_id": item["id"], "output_index": index}
            yield event(
                "response.output_item.added", output_index=index, item=item | {"status": "in_progress", "arguments": ""}
            )
            yield event("response.function_call_arguments.delta", **at, delta=item["arguments"])
            yield event("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"])
        else:
            yield event("response.output_item.added", output_index=index, item=item)
        yield event("response.output_item.done", output_index=index, item=item)
    yield event(_FINAL_EVENTS.get(str(response.get("status")), "response.completed"), response=response)


#: The last event of a stream, by the response's status.
_FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def _for_caller(turn: Turn, response: dict[str, Any]) -> dict[str, Any]:
    answer = response | {"store": turn.store}
    if turn.previous_response_id is not None:
        answer["previous_response_id"] = turn.previous_response_id
    return answer


def _unavailable(store: ResponseStore, exc: Exception) -> ResponseStoreUnavailable:
    logger.warning("the %s cannot be used: %s: %s", store.description, type(exc).__name__, exc)
    return ResponseStoreUnavailable(
        "Stored responses cannot be read or written right now; try again shortly, or send store: false."
    )


def _page_size(given: str | None) -> int:
    if given is None:
        return DEFAULT_PAGE
    try:
        limit = int(given)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}.", param="limit")
    return limit


def _item_id(item: dict[str, Any]) -> str:
    """An input item's id: its own, else a new one of its kind."""
    given = item.get("id")
    if isinstance(given, str) and given:
        return given
    prefix = {"function_call": "fc", "function_call_output": "fco"}.get(item.get("type", "message"), "msg")
    return f"{prefix}_{uuid.uuid4().hex}"


def _listed(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as `/input_items` lists it (OpenAI's `ItemResource`): with its id and status,
    a message's text content as parts."""
    kind = item.get("type", "message")
    listed = item | {"id": item_id, "type": kind}
    if kind != "message":
        return {"status": "completed"} | listed
    assistant = item.get("role") == "assistant"
    content = item.get("content")
    if isinstance(content, str):
        content = [{"type": "output_text" if assistant else "input_text", "text": content}]
    if assistant:
        content = [
            {"type": "output_text", "annotations": [], "logprobs": []} | part | {"type": "output_text"}
            if part.get("type") in ("input_text", "output_text")
            else part
            for part in content or []
        ]
    return {"status": "completed"} | listed | {"content": content}

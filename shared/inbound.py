"""The caller's request, as a use case reads it: headers, path, and the body
(JSON read by an operation's reader, or a multipart form), within the body limit.

`http.respond` makes one per request; the use case reads it first (admit,
then parse), so a body too large or malformed is refused before any upstream work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar, overload

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from . import validation
from .errors import InvalidRequest, PayloadTooLarge

T = TypeVar("T")


class Inbound:
    """What an operation may read of the caller's request."""

    def __init__(self, request: Request, request_id: str, max_body_bytes: int) -> None:
        self._request = request
        self.request_id = request_id
        self.max_body_bytes = max_body_bytes
        #: Set once the body has been read: from then on the connection can be watched.
        self.body_read = asyncio.Event()

    @property
    def headers(self) -> Mapping[str, str]:
        return self._request.headers

    @property
    def query(self) -> Mapping[str, str]:
        return self._request.query_params

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def path(self) -> str:
        return self._request.url.path

    def path_param(self, name: str) -> str:
        return str(self._request.path_params[name])

    async def _stream(self, limit: int) -> AsyncGenerator[bytes, None]:
        """The body's chunks, refused with 413 past `limit` without reading it all."""
        declared = self._request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            yield chunk
        self.body_read.set()

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self._stream(self.max_body_bytes)])

    async def form(self, limit: int, read: Callable[[dict[str, Any]], T]) -> T:
        """A multipart body of at most `limit` bytes and at most the request
        limit (`max_body_bytes`), read by `read` (a `payloads` reader): text
        fields as strings, files as `(filename, bytes)`.

        Fields named `name[]` (how the OpenAI SDK sends arrays) become lists
        under `name`. A body declared larger than the limit is refused before
        any of it is read, one sent in chunks as soon as it passes the limit
        (413, as for JSON bodies). The upload is parsed as it streams in,
        spooled to disk past 1 MB, and read into memory once.
        """
        if not self._request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest("The request body must be multipart/form-data.")
        limit = min(limit, self.max_body_bytes)
        parser = MultiPartParser(self._request.headers, self._stream(limit), max_files=4, max_fields=100)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise InvalidRequest(f"The multipart body is malformed: {exc.message}") from None
        fields: dict[str, Any] = {}
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    fields[name] = (value.filename or "upload", await value.read())
                elif name.endswith("[]"):
                    fields.setdefault(name[:-2], []).append(value)
                else:
                    fields[name] = value
        finally:
            await form.close()
        return read(fields)

    @overload
    async def json(self) -> dict[str, Any]: ...

    @overload
    async def json(self, read: Callable[[dict[str, Any]], T]) -> T: ...

    async def json(self, read: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """The body as a JSON object, read by `read` (a `payloads` reader: the
        checked `Request`), or a 400 saying what is wrong with it. A large body
        is parsed and read in a worker thread, so the event loop keeps serving
        other requests meanwhile."""
        raw = await self.body()
        if len(raw) < THREADED_PARSE_BYTES:
            return _json_object(raw, read)
        return await asyncio.to_thread(_json_object, raw, read)


#: Bodies from this size on are parsed off the event loop.
THREADED_PARSE_BYTES = 256 * 1024


def _json_object(raw: bytes, read: Callable[[dict[str, Any]], Any] | None) -> Any:
    body = validation.parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body if read is None else read(body)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")

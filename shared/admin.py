"""Catalog, project and API key management, against the configured stores.

    python -m shared.admin catalog validate models.json
    python -m shared.admin catalog import models.json     # upsert into the catalog store
    python -m shared.admin catalog export backup.json
    python -m shared.admin keys create-project team-a --name "Team A" [--admin]
    python -m shared.admin keys issue team-a --name ci [--expires-days 90]
    python -m shared.admin keys list [team-a]
    python -m shared.admin keys disable <key id>
    python -m shared.admin keys delete <key id>
    python -m shared.admin limits set team-a --budget-usd 500 --budget-period month \
        --tokens-per-minute 200000 --requests-per-minute 600 --when-store-unavailable deny [--key <key id>]
    python -m shared.admin limits clear team-a [--key <key id>]
    python -m shared.admin limits show team-a             # the limits of the project and its keys, and their use
    python -m shared.admin cosmos create-containers       # emulator / key auth; in Azure the template does it
    python -m shared.admin usage copy usage                # old `/project` container -> the day-partitioned one

The stores are Cosmos (the `models` and `projects` containers) when
COSMOS_URL is set, else MODELS_FILE and PROJECTS_FILE, as for the gateway. A new key is printed once; only its
SHA-256 hash is stored. A key id is the first 12 characters of that hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .catalog import COSMOS_SYSTEM_FIELDS, CatalogSource
from .domain import InvalidCatalogEntry, LLMModel
from .limits import Limiter
from .projects import (
    KEY_DOCUMENT_PREFIX,
    ProjectStore,
    expiry,
    hash_key,
    key_document_id,
    key_is_usable,
    new_key,
    utc_now,
)
from .quota import LIMIT_FIELDS, InvalidLimits, parse_limits, scope_of
from .settings import Settings
from .stores import Stores, cosmos_containers
from .usage import CosmosUsageStore, copy_usage

KEY_ID_LENGTH = 12


class AdminError(Exception):
    """A management command that cannot be carried out, with the reason."""


def key_id(document: dict[str, Any]) -> str:
    return document["id"][len(KEY_DOCUMENT_PREFIX) :][:KEY_ID_LENGTH]


async def create_project(store: ProjectStore, project_id: str, name: str | None, admin: bool) -> str:
    if await store.read(project_id) is not None:
        raise AdminError(f"project '{project_id}' already exists")
    await store.upsert(
        {"id": project_id, "type": "project", "name": name or project_id, "admin": admin, "created": utc_now()}
    )
    return f"created project {project_id}"


async def issue_key(store: ProjectStore, project_id: str, name: str, expires_days: int | None) -> str:
    project = await store.read(project_id)
    if project is None or project.get("type") != "project":
        raise AdminError(f"no project '{project_id}'; create it first")
    key = new_key()
    expires = None
    if expires_days is not None:
        expires = (datetime.now(UTC) + timedelta(days=expires_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "id": key_document_id(hash_key(key)),
        "type": "key",
        "project": project_id,
        "name": name,
        "created": utc_now(),
        "expires": expires,
        "disabled": False,
    }
    await store.upsert(document)
    return f"key id {key_id(document)} for project {project_id} (shown once, store it now):\n{key}"


async def list_keys(store: ProjectStore, project_id: str | None) -> str:
    rows = ["KEY ID        PROJECT            NAME               CREATED               EXPIRES               STATE"]
    for document in sorted(await store.documents(), key=lambda d: (d.get("project", ""), d.get("created", ""))):
        if document.get("type") != "key" or project_id not in (None, document["project"]):
            continue
        rows.append(_key_row(document))
    return "\n".join(rows)


def _key_row(document: dict[str, Any]) -> str:
    if key_is_usable(document):
        state = "active"
    elif document.get("disabled"):
        state = "disabled"
    else:
        try:
            expiry(document.get("expires"))
            state = "expired"
        except ValueError:
            state = "refused: malformed expires"
    return (
        f"{key_id(document):<13} {document['project']:<18} {document.get('name', ''):<18} "
        f"{document.get('created', ''):<21} {document.get('expires') or '-'!s:<21} {state}"
    )


async def _key_document(store: ProjectStore, wanted: str) -> dict[str, Any]:
    matches = [
        document
        for document in await store.documents()
        if document.get("type") == "key" and key_id(document).startswith(wanted)
    ]
    if len(matches) != 1:
        raise AdminError(f"{'no' if not matches else 'more than one'} key matches id '{wanted}'")
    return matches[0]


async def disable_key(store: ProjectStore, wanted: str) -> str:
    document = await _key_document(store, wanted)
    await store.upsert(document | {"disabled": True})
    return f"disabled key {key_id(document)} of project {document['project']}"


async def delete_key(store: ProjectStore, wanted: str) -> str:
    document = await _key_document(store, wanted)
    await store.delete(document["id"])
    return f"deleted key {key_id(document)} of project {document['project']}"


async def _limited_document(store: ProjectStore, project_id: str, key: str | None) -> dict[str, Any]:
    """The project's document, or with `key` the document of that key of the project."""
    if key is None:
        project = await store.read(project_id)
        if project is None or project.get("type") != "project":
            raise AdminError(f"no project '{project_id}'")
        return project
    document = await _key_document(store, key)
    if document["project"] != project_id:
        raise AdminError(f"key {key} belongs to project {document['project']}, not {project_id}")
    return document


def _stored_limits(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if not key.startswith("_")}


async def set_limits(store: ProjectStore, project_id: str, key: str | None, limits: dict[str, Any]) -> str:
    try:
        checked = parse_limits(limits).document()
    except InvalidLimits as exc:
        raise AdminError(str(exc)) from None
    document = await _limited_document(store, project_id, key)
    await store.upsert(_stored_limits(document) | {"limits": checked})
    return f"limits of {'key ' + key if key else 'project ' + project_id}: {json.dumps(checked)}"


async def clear_limits(store: ProjectStore, project_id: str, key: str | None) -> str:
    document = await _limited_document(store, project_id, key)
    await store.upsert({name: value for name, value in _stored_limits(document).items() if name != "limits"})
    return f"cleared the limits of {'key ' + key if key else 'project ' + project_id}"


async def show_limits(stores: Stores, project_id: str) -> str:
    project = await _limited_document(stores.projects, project_id, None)
    keys = [d for d in await stores.projects.documents() if d.get("type") == "key" and d["project"] == project_id]
    scopes = [scope_of(f"project:{project_id}", project)] + [scope_of(f"key:{key_id(key)}", key) for key in keys]
    found = tuple(scope for scope in scopes if scope is not None)
    if not found:
        return f"project {project_id} and its keys have no limits"
    if stores.database is None:
        lines = [
            f"{scope.name}: {json.dumps(scope.quota.document() if scope.quota else scope.problem)}" for scope in found
        ]
        return "\n".join([*lines, "(without Cosmos the counters live in the gateway process: GET /v1/limits)"])
    rows = await Limiter(stores.limits).report(found)
    return "\n".join(json.dumps(row) for row in rows)


def read_catalog_file(path: str) -> list[dict[str, Any]]:
    """The documents of a catalog file, every one valid, or the reasons they are not."""
    try:
        documents = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdminError(f"{path}: {exc}") from None
    if not isinstance(documents, list):
        raise AdminError(f"{path} must hold a JSON list of model documents")
    problems = []
    for index, document in enumerate(documents):
        try:
            LLMModel.from_document(document if isinstance(document, dict) else {})
        except InvalidCatalogEntry as exc:
            problems.append(f"document {index}: {exc}")
    ids = [document.get("id") for document in documents]
    problems += [f"id '{model_id}' appears more than once" for model_id in sorted({i for i in ids if ids.count(i) > 1})]
    if problems:
        raise AdminError(f"{path} is not a valid catalog:\n  " + "\n  ".join(problems))
    return documents


def _stored(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in COSMOS_SYSTEM_FIELDS | {"_ts"}}


async def validate_catalog(path: str) -> str:
    return f"{path}: {len(read_catalog_file(path))} valid model documents"


async def import_catalog(source: CatalogSource, path: str) -> str:
    documents = read_catalog_file(path)
    existing = {document["id"]: _stored(document) for document in await source.load()}
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for document in documents:
        before = existing.get(document["id"])
        if before == document:
            counts["unchanged"] += 1
            continue
        await source.save(document)
        counts["created" if before is None else "updated"] += 1
    return f"imported {path} into {source.description}: " + ", ".join(f"{n} {k}" for k, n in counts.items())


async def export_catalog(source: CatalogSource, path: str) -> str:
    documents = sorted((_stored(d) for d in await source.load()), key=lambda d: str(d.get("id")))
    Path(path).write_text(json.dumps(documents, indent=2) + "\n", encoding="utf-8")
    return f"exported {len(documents)} model documents from {source.description} to {path}"


def _days(value: str) -> int:
    """`--expires-days`: a key that expires on issue, or at no readable date, is refused here."""
    try:
        days = int(value)
    except ValueError:
        days = 0
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, 1 or more; got {value!r}")
    return days


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m shared.admin", description=__doc__.splitlines()[0])
    areas = root.add_subparsers(dest="area", required=True)
    catalog = areas.add_parser("catalog", help="the model catalog").add_subparsers(dest="command", required=True)
    for command, text in (
        ("validate", "check a catalog file"),
        ("import", "upsert a catalog file into the store"),
        ("export", "write the store's catalog to a file"),
    ):
        catalog.add_parser(command, help=text).add_argument("file")
    keys = areas.add_parser("keys", help="projects and their API keys").add_subparsers(dest="command", required=True)
    create = keys.add_parser("create-project", help="create a project")
    create.add_argument("project")
    create.add_argument("--name")
    create.add_argument("--admin", action="store_true", help="may use the admin API")
    issue = keys.add_parser("issue", help="issue a new key for a project (printed once)")
    issue.add_argument("project")
    issue.add_argument("--name", default="default")
    issue.add_argument("--expires-days", type=_days, help="a whole number of days, 1 or more")
    listing = keys.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("project", nargs="?")
    for command in ("disable", "delete"):
        keys.add_parser(command, help=f"{command} a key").add_argument("key_id")
    limits = areas.add_parser("limits", help="budgets and rate limits").add_subparsers(dest="command", required=True)
    setting = limits.add_parser("set", help="set the limits of a project or of one of its keys (replacing them)")
    setting.add_argument("project")
    setting.add_argument("--key", help="a key id of the project: the key's limits, in addition to the project's")
    setting.add_argument("--budget-usd", type=float)
    setting.add_argument("--budget-period", choices=("month", "day"))
    setting.add_argument("--tokens-per-minute", type=int)
    setting.add_argument("--requests-per-minute", type=int)
    setting.add_argument("--when-store-unavailable", choices=("deny", "allow"))
    clearing = limits.add_parser("clear", help="remove the limits of a project or of one of its keys")
    clearing.add_argument("project")
    clearing.add_argument("--key")
    limits.add_parser("show", help="the limits of a project and its keys, and what is spent").add_argument("project")
    cosmos = areas.add_parser("cosmos", help="the Cosmos database").add_subparsers(dest="command", required=True)
    cosmos.add_parser("create-containers", help="create the database and missing containers (not in Azure)")
    usage = areas.add_parser("usage", help="usage records").add_subparsers(dest="command", required=True)
    usage.add_parser("copy", help="copy every record of an older usage container into the current one").add_argument(
        "source", help="the older container's id (it is only read)"
    )
    return root


async def run(arguments: argparse.Namespace, stores: Stores, settings: Settings) -> str:
    store = stores.projects
    try:
        if arguments.area in ("cosmos", "usage"):
            if stores.database is None or not isinstance(stores.usage, CosmosUsageStore):
                raise AdminError("COSMOS_URL is not set: there is no Cosmos database to work on")
            if arguments.area == "cosmos":
                created = await stores.database.create_containers(cosmos_containers(settings))
                return "\n".join(created)
            return await copy_usage(stores.database, arguments.source, stores.usage)
        match arguments.area, arguments.command:
            case "catalog", "validate":
                return await validate_catalog(arguments.file)
            case "catalog", "import":
                return await import_catalog(stores.catalog, arguments.file)
            case "catalog", _:
                return await export_catalog(stores.catalog, arguments.file)
            case "limits", "set":
                given = {name: getattr(arguments, name) for name in LIMIT_FIELDS}
                limits = {name: value for name, value in given.items() if value is not None}
                return await set_limits(store, arguments.project, arguments.key, limits)
            case "limits", "clear":
                return await clear_limits(store, arguments.project, arguments.key)
            case "limits", _:
                return await show_limits(stores, arguments.project)
        match arguments.command:
            case "create-project":
                return await create_project(store, arguments.project, arguments.name, arguments.admin)
            case "issue":
                return await issue_key(store, arguments.project, arguments.name, arguments.expires_days)
            case "list":
                return await list_keys(store, arguments.project)
            case "disable":
                return await disable_key(store, arguments.key_id)
            case _:
                return await delete_key(store, arguments.key_id)
    finally:
        for close in stores.closers:
            await close()


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        settings = Settings.from_environment()
        print(asyncio.run(run(arguments, Stores.from_settings(settings), settings)))
    except AdminError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"error: the store failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

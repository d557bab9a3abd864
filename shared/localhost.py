"""Serve `function_app.app` locally on uvicorn, the way `func start` would.

Azure Functions Core Tools cannot be installed everywhere, so this is how the
gateway runs on a workstation and in the tests: the same HTTP functions, at
the paths host.json's `routePrefix` gives them, with local.settings.json's
`Values` loaded into the environment without overriding what is already set.

    python -m shared.localhost [--port 7071] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

from .http import http_route

logger = logging.getLogger("shared.localhost")

DEFAULT_PORT = 7071


def load_local_settings(path: Path) -> None:
    """Put local.settings.json's Values into the environment, as `func start` does."""
    if not path.exists():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    for name, value in values.items():
        os.environ.setdefault(name, str(value))


def route_prefix(host_json: Path) -> str:
    """host.json's `extensions.http.routePrefix`; Functions' default is `api`."""
    if not host_json.exists():
        return "api"
    config = json.loads(host_json.read_text(encoding="utf-8"))
    return str(config.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")


#: A Functions catch-all route parameter, `{*name}`.
_CATCH_ALL = re.compile(r"\{\*(\w+)\}")


def host_order_key(function_name: str) -> str:
    """The key the Functions host orders functions by, and so tries their routes in.

    The host sorts function metadata by name with `StringComparer.OrdinalIgnoreCase`
    (azure-functions-host, src/WebJobs.Script/Host/FunctionMetadataManager.cs,
    `LoadFunctionMetadata`), which compares names upper-cased: `_` (0x5F) sorts
    after every letter. Function names are ASCII (`^[a-z][a-z0-9_\\-]*$`, any
    case), so `str.upper` is that comparison. Each route is then added to one
    ASP.NET RouteCollection in that order (WebScriptHostHttpRoutesManager.cs;
    WebJobsRouteBuilder.Build keeps the order), and the first route whose
    template and method constraint match a request serves it.
    """
    return function_name.upper()


def routes_of(function_app: Any, prefix: str) -> list[Route]:
    """A Starlette route for every HTTP-triggered function of a FunctionApp, in
    the order the Functions host tries them (`host_order_key`: by function
    name, not by how specific the template is), with exactly the methods the
    function declares: like the host, a GET route does not answer HEAD.
    A request whose method a route does not take goes on to the next route,
    as in the host (Starlette serves a later full match before an earlier
    path-only one).
    """
    routes = []
    for function in function_app.get_functions():
        if (route := http_route(function)) is None:
            continue
        template, methods = route
        path = "/" + "/".join(part for part in (prefix, _CATCH_ALL.sub(r"{\1:path}", template.strip("/"))) if part)
        name = function.get_function_name()
        served = Route(path, function.get_user_function(), methods=methods, name=name)
        served.methods = set(methods)  # Starlette adds HEAD to every GET route; the host does not
        routes.append(served)
    return sorted(routes, key=lambda route: host_order_key(route.name))


def local_app(project_dir: Path) -> Starlette:
    """`function_app.app`'s functions on Starlette; its lifespan closes the gateway."""
    load_local_settings(project_dir / "local.settings.json")
    function_app = importlib.import_module("function_app")
    gateway = function_app.app.service.gateway

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()

    app = Starlette(routes=routes_of(function_app.app, route_prefix(project_dir / "host.json")), lifespan=lifespan)
    app.router.redirect_slashes = False  # the Functions host does not redirect either
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args()
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    project_dir = Path.cwd()
    app = local_app(project_dir)
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level, access_log=False)


if __name__ == "__main__":
    main()

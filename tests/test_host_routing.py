"""Routes as the real Functions host serves them: tried in function-name order, HEAD only where declared."""

import re
from pathlib import Path

import httpx
import pytest
from starlette.routing import Match, Route
from starlette.testclient import TestClient

from shared.localhost import host_order_key
from shared.localhost import local_app as starlette_app
from tests.support import PROJECT_DIR
from tests.test_errors import assert_openai_error


@pytest.fixture(scope="module")
def local_app():
    """The local host's app, built once: a FunctionApp's functions can be listed only once."""
    return starlette_app(Path(PROJECT_DIR))


def _sample_path(route: Route) -> str:
    """A concrete path the route's template matches (`{model_id}` -> `sample`)."""
    return re.sub(r"\{[^}]+\}", "sample", route.path)


def _first_match(routes: list[Route], method: str, path: str) -> Route | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return next((route for route in routes if route.matches(scope)[0] is Match.FULL), None)


def test_the_local_host_tries_routes_in_the_functions_host_order(local_app):
    names = [route.name for route in local_app.routes]
    assert names == sorted(names, key=host_order_key)
    assert sorted(["usage", "zz_unknown_route", "Azure_x", "azure_x", "azurex"], key=host_order_key) == [
        "azurex",  # `_` sorts after letters: the host compares upper-cased names
        "Azure_x",  # equal to the next under OrdinalIgnoreCase: the host's sort is stable, so is this one
        "azure_x",
        "usage",
        "zz_unknown_route",
    ]


def test_every_route_and_method_is_served_by_its_own_function_under_the_host_order(local_app):
    routes = list(local_app.routes)
    catch_all = routes[-1]
    assert catch_all.path.endswith(":path}"), f"the catch-all must sort last by name, not {catch_all.name}"
    shadowed = []
    for route in routes[:-1]:
        for method in sorted(route.methods):
            first = _first_match(routes, method, _sample_path(route))
            if first is not route:
                shadowed.append(f"{method} {route.path} ({route.name}) is answered by {first and first.name}")
    assert not shadowed


def test_every_get_route_declares_head_and_the_local_host_adds_no_method(local_app):
    import function_app

    declared = {
        b._function.get_function_name(): b._function.get_trigger().methods for b in function_app.app._function_builders
    }
    for route in local_app.routes:
        methods = {str(getattr(method, "value", method)) for method in declared[route.name]}
        # Starlette would add HEAD to every GET route; the Functions host does not, so neither may the local host.
        assert route.methods == methods, route.name
        assert ("GET" in methods) <= ("HEAD" in methods), f"{route.name}: declare HEAD with GET"


def test_head_gets_the_get_status_and_headers_without_a_body(local_app):
    with TestClient(local_app) as client:
        got, head = client.get("/health"), client.head("/health")
    assert (head.status_code, got.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"] == "application/json"


def test_usage_is_reached_over_http_under_the_host_order(gateway):
    # Before the catch-all was renamed it sorted before `usage` and answered this with 405.
    assert httpx.get(f"{gateway.url}/v1/usage").status_code == 200


@pytest.mark.parametrize(
    "path", ["/health", "/v1/models", "/v1/models/chat-a", "/openai/models", "/openai/v1/models/chat-a", "/v1/usage"]
)
def test_head_is_answered_where_get_is(gateway, path):
    got, head = httpx.get(f"{gateway.url}{path}"), httpx.head(f"{gateway.url}{path}")
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]


def test_method_not_allowed_lists_head_where_get_is_allowed(gateway):
    response = httpx.delete(f"{gateway.url}/v1/models/chat-a")
    assert_openai_error(response, 405, "invalid_request_error", "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"
    wrong = httpx.head(f"{gateway.url}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.content == b""
    assert wrong.headers["allow"] == "POST"
    assert httpx.head(f"{gateway.url}/v1/nothing-here").status_code == 404


def test_the_worker_finds_exactly_one_function_app_at_the_top_of_function_app_py():
    """The Python worker indexes the one module-level `FunctionRegister` instance (loader.index_function_app)."""
    from azure.functions import FunctionRegister

    import function_app

    apps = [value for value in vars(function_app).values() if isinstance(value, FunctionRegister)]
    assert apps == [function_app.app]

"""Azure Functions entry points: one HTTP function per endpoint.

`create_app` builds the app from the settings, once per process: the Python
worker indexes the module-level `app`. Each handler hands the request to a
gateway use case; the rules live in `shared/`. The HTTP streams types
(Starlette's) let chat stream as SSE. Every GET route also declares HEAD: the
Functions host does not answer HEAD for a GET route by itself (uptime probes
send HEAD); the reply has no body.
"""

import gc

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared import azure_paths
from shared.gateway import Gateway
from shared.http import Endpoint
from shared.lifecycle import close_on_termination
from shared.service import Service, compose, not_routed
from shared.settings import Settings


class GatewayApp(func.FunctionApp):
    """The Functions app, and the service (the gateway) its functions hand requests to."""

    def __init__(self, service: Service) -> None:
        super().__init__(http_auth_level=func.AuthLevel.ANONYMOUS)
        self.service = service


_GET = ["GET", "HEAD"]

#: The operations whose body names the model: Azure OpenAI's paths name it instead.
_DEPLOYMENT_OPERATIONS = (
    "chat/completions",
    "completions",
    "embeddings",
    "images/generations",
    "audio/speech",
    "audio/transcriptions",
    "audio/translations",
)


def _openai_operations(gateway: Gateway) -> list[tuple[str, str, list[str], Endpoint]]:
    """OpenAI's operations, each served under /v1 and Azure's paths: the function
    name, the path after `v1/`, the methods and the use case."""
    return [
        ("chat_completions", "chat/completions", ["POST"], gateway.chat_completions),
        ("completions", "completions", ["POST"], gateway.completions),
        ("embeddings", "embeddings", ["POST"], gateway.embeddings),
        ("image_generations", "images/generations", ["POST"], gateway.image_generations),
        ("speech", "audio/speech", ["POST"], gateway.speech),
        ("transcriptions", "audio/transcriptions", ["POST"], gateway.transcriptions),
        ("translations", "audio/translations", ["POST"], gateway.translations),
        ("responses", "responses", ["POST"], gateway.responses),
        ("get_response", "responses/{response_id}", _GET, gateway.get_response),
        ("delete_response", "responses/{response_id}", ["DELETE"], gateway.delete_response),
        ("response_input_items", "responses/{response_id}/input_items", _GET, gateway.response_input_items),
        ("list_models", "models", _GET, gateway.list_models),
        ("get_model", "models/{model_id}", _GET, gateway.get_model),
    ]


def _management_routes(gateway: Gateway) -> list[tuple[str, str, list[str], Endpoint]]:
    """The project's own usage and limits, and the admin API: the function name, the route,
    the methods and the use case."""
    management = gateway.management
    limits, model = "v1/admin/projects/{project_id}/limits", "v1/admin/models/{model_id}"
    return [
        ("usage", "v1/usage", _GET, management.own_usage),
        ("limits", "v1/limits", _GET, management.own_limits),
        ("manage_get_limits", limits, _GET, management.project_limits),
        ("manage_put_limits", limits, ["PUT"], management.put_project_limits),
        ("manage_delete_limits", limits, ["DELETE"], management.delete_project_limits),
        ("manage_usage", "v1/admin/usage", _GET, management.project_usage),
        ("manage_list_models", "v1/admin/models", _GET, management.list_models),
        ("manage_get_model", model, _GET, management.get_model),
        ("manage_put_model", model, ["PUT"], management.put_model),
        ("manage_delete_model", model, ["DELETE"], management.delete_model),
    ]


def create_app(settings: Settings) -> GatewayApp:
    """The app with every route, serving a gateway built from `settings`."""
    service = compose(settings)
    gateway, handle = service.gateway, service.handle
    app = GatewayApp(service)
    close_on_termination(gateway.close, grace_seconds=10.0)

    def serve(name: str, route: str, methods: list[str], endpoint: Endpoint) -> None:
        """Function `name`: `route`'s `methods`, handed to `endpoint`."""

        async def handler(req: Request) -> Response:
            return await handle(req, endpoint)

        app.function_name(name)(app.route(route=route, methods=methods)(handler))

    @app.route(route="health", methods=["GET", "HEAD"])
    async def health(req: Request) -> Response:
        return await handle(req, gateway.health)

    # Each OpenAI operation under /v1; under Azure's v1 API (`OpenAI(base_url="<endpoint>/openai/v1")`);
    # and under Azure OpenAI's paths, for code written for `openai.AzureOpenAI`, the deployment in
    # the path being the catalog model where the operation names one (see shared/azure_paths.py).
    for name, path, methods, endpoint in _openai_operations(gateway):
        serve(name, f"v1/{path}", methods, endpoint)
        serve(f"azure_v1_{name}", f"openai/v1/{path}", methods, endpoint)
        if path in _DEPLOYMENT_OPERATIONS:
            serve(f"azure_{name}", f"openai/deployments/{{model}}/{path}", methods, azure_paths.deployment(endpoint))
        else:
            serve(f"azure_{name}", f"openai/{path}", methods, endpoint)

    for name, route, methods, endpoint in _management_routes(gateway):
        serve(name, route, methods, endpoint)

    @app.route(route="{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def zz_unknown_route(req: Request) -> Response:
        """Any other path or method: OpenAI's 404 or 405 error body, never a bare one.

        The Functions host tries routes in function-name order (see
        shared/localhost.py, `host_order_key`), not most specific first: this
        function's name sorts after every other, so it is tried last.
        """
        return await handle(req, not_routed(app))

    return app


app = create_app(Settings.from_environment())
# What start-up built lives as long as the process: the collector need not look at it
# again. Each full collection would otherwise walk every object of every module
# imported (with telemetry on, OpenTelemetry's and the exporter's too), a pause on
# the event loop that grows with them.
gc.freeze()

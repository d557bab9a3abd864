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
from shared.lifecycle import close_on_termination
from shared.service import Service, compose, not_routed
from shared.settings import Settings


class GatewayApp(func.FunctionApp):
    """The Functions app, and the service (the gateway) its functions hand requests to."""

    def __init__(self, service: Service) -> None:
        super().__init__(http_auth_level=func.AuthLevel.ANONYMOUS)
        self.service = service


def create_app(settings: Settings) -> GatewayApp:
    """The app with every route, serving a gateway built from `settings`."""
    service = compose(settings)
    gateway, handle = service.gateway, service.handle
    app = GatewayApp(service)
    close_on_termination(gateway.close, grace_seconds=10.0)

    @app.route(route="health", methods=["GET", "HEAD"])
    async def health(req: Request) -> Response:
        return await handle(req, gateway.health)

    @app.route(route="v1/models", methods=["GET", "HEAD"])
    async def list_models(req: Request) -> Response:
        return await handle(req, gateway.list_models)

    @app.route(route="v1/models/{model_id}", methods=["GET", "HEAD"])
    async def get_model(req: Request) -> Response:
        return await handle(req, gateway.get_model)

    @app.route(route="v1/chat/completions", methods=["POST"])
    async def chat_completions(req: Request) -> Response:
        return await handle(req, gateway.chat_completions)

    @app.route(route="v1/completions", methods=["POST"])
    async def completions(req: Request) -> Response:
        return await handle(req, gateway.completions)

    @app.route(route="v1/embeddings", methods=["POST"])
    async def embeddings(req: Request) -> Response:
        return await handle(req, gateway.embeddings)

    @app.route(route="v1/images/generations", methods=["POST"])
    async def image_generations(req: Request) -> Response:
        return await handle(req, gateway.image_generations)

    @app.route(route="v1/audio/speech", methods=["POST"])
    async def speech(req: Request) -> Response:
        return await handle(req, gateway.speech)

    @app.route(route="v1/audio/transcriptions", methods=["POST"])
    async def transcriptions(req: Request) -> Response:
        return await handle(req, gateway.transcriptions)

    @app.route(route="v1/audio/translations", methods=["POST"])
    async def translations(req: Request) -> Response:
        return await handle(req, gateway.translations)

    @app.route(route="v1/responses", methods=["POST"])
    async def responses(req: Request) -> Response:
        return await handle(req, gateway.responses)

    @app.route(route="v1/responses/{response_id}", methods=["GET", "HEAD"])
    async def get_response(req: Request) -> Response:
        return await handle(req, gateway.get_response)

    @app.route(route="v1/responses/{response_id}", methods=["DELETE"])
    async def delete_response(req: Request) -> Response:
        return await handle(req, gateway.delete_response)

    @app.route(route="v1/responses/{response_id}/input_items", methods=["GET", "HEAD"])
    async def response_input_items(req: Request) -> Response:
        return await handle(req, gateway.response_input_items)

    @app.route(route="v1/usage", methods=["GET", "HEAD"])
    async def usage(req: Request) -> Response:
        return await handle(req, gateway.management.own_usage)

    @app.route(route="v1/admin/usage", methods=["GET", "HEAD"])
    async def manage_usage(req: Request) -> Response:
        return await handle(req, gateway.management.project_usage)

    @app.route(route="v1/admin/models", methods=["GET", "HEAD"])
    async def manage_list_models(req: Request) -> Response:
        return await handle(req, gateway.management.list_models)

    @app.route(route="v1/admin/models/{model_id}", methods=["GET", "HEAD"])
    async def manage_get_model(req: Request) -> Response:
        return await handle(req, gateway.management.get_model)

    @app.route(route="v1/admin/models/{model_id}", methods=["PUT"])
    async def manage_put_model(req: Request) -> Response:
        return await handle(req, gateway.management.put_model)

    @app.route(route="v1/admin/models/{model_id}", methods=["DELETE"])
    async def manage_delete_model(req: Request) -> Response:
        return await handle(req, gateway.management.delete_model)

    # Azure OpenAI's paths, for code written for `openai.AzureOpenAI`: the same operations,
    # the deployment in the path being the catalog model (see shared/azure_paths.py).

    @app.route(route="openai/deployments/{model}/chat/completions", methods=["POST"])
    async def azure_chat_completions(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.chat_completions))

    @app.route(route="openai/deployments/{model}/completions", methods=["POST"])
    async def azure_completions(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.completions))

    @app.route(route="openai/deployments/{model}/embeddings", methods=["POST"])
    async def azure_embeddings(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.embeddings))

    @app.route(route="openai/deployments/{model}/images/generations", methods=["POST"])
    async def azure_image_generations(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.image_generations))

    @app.route(route="openai/deployments/{model}/audio/speech", methods=["POST"])
    async def azure_speech(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.speech))

    @app.route(route="openai/deployments/{model}/audio/transcriptions", methods=["POST"])
    async def azure_transcriptions(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.transcriptions))

    @app.route(route="openai/deployments/{model}/audio/translations", methods=["POST"])
    async def azure_translations(req: Request) -> Response:
        return await handle(req, azure_paths.deployment(gateway.translations))

    @app.route(route="openai/responses", methods=["POST"])
    async def azure_responses(req: Request) -> Response:
        return await handle(req, gateway.responses)

    @app.route(route="openai/responses/{response_id}", methods=["GET", "HEAD"])
    async def azure_get_response(req: Request) -> Response:
        return await handle(req, gateway.get_response)

    @app.route(route="openai/responses/{response_id}", methods=["DELETE"])
    async def azure_delete_response(req: Request) -> Response:
        return await handle(req, gateway.delete_response)

    @app.route(route="openai/responses/{response_id}/input_items", methods=["GET", "HEAD"])
    async def azure_response_input_items(req: Request) -> Response:
        return await handle(req, gateway.response_input_items)

    @app.route(route="openai/models", methods=["GET", "HEAD"])
    async def azure_list_models(req: Request) -> Response:
        return await handle(req, gateway.list_models)

    @app.route(route="openai/models/{model_id}", methods=["GET", "HEAD"])
    async def azure_get_model(req: Request) -> Response:
        return await handle(req, gateway.get_model)

    # Azure's v1 API (`OpenAI(base_url="<endpoint>/openai/v1")`): the /v1 operations.

    @app.route(route="openai/v1/chat/completions", methods=["POST"])
    async def azure_v1_chat_completions(req: Request) -> Response:
        return await handle(req, gateway.chat_completions)

    @app.route(route="openai/v1/completions", methods=["POST"])
    async def azure_v1_completions(req: Request) -> Response:
        return await handle(req, gateway.completions)

    @app.route(route="openai/v1/embeddings", methods=["POST"])
    async def azure_v1_embeddings(req: Request) -> Response:
        return await handle(req, gateway.embeddings)

    @app.route(route="openai/v1/images/generations", methods=["POST"])
    async def azure_v1_image_generations(req: Request) -> Response:
        return await handle(req, gateway.image_generations)

    @app.route(route="openai/v1/audio/speech", methods=["POST"])
    async def azure_v1_speech(req: Request) -> Response:
        return await handle(req, gateway.speech)

    @app.route(route="openai/v1/audio/transcriptions", methods=["POST"])
    async def azure_v1_transcriptions(req: Request) -> Response:
        return await handle(req, gateway.transcriptions)

    @app.route(route="openai/v1/audio/translations", methods=["POST"])
    async def azure_v1_translations(req: Request) -> Response:
        return await handle(req, gateway.translations)

    @app.route(route="openai/v1/responses", methods=["POST"])
    async def azure_v1_responses(req: Request) -> Response:
        return await handle(req, gateway.responses)

    @app.route(route="openai/v1/responses/{response_id}", methods=["GET", "HEAD"])
    async def azure_v1_get_response(req: Request) -> Response:
        return await handle(req, gateway.get_response)

    @app.route(route="openai/v1/responses/{response_id}", methods=["DELETE"])
    async def azure_v1_delete_response(req: Request) -> Response:
        return await handle(req, gateway.delete_response)

    @app.route(route="openai/v1/responses/{response_id}/input_items", methods=["GET", "HEAD"])
    async def azure_v1_response_input_items(req: Request) -> Response:
        return await handle(req, gateway.response_input_items)

    @app.route(route="openai/v1/models", methods=["GET", "HEAD"])
    async def azure_v1_list_models(req: Request) -> Response:
        return await handle(req, gateway.list_models)

    @app.route(route="openai/v1/models/{model_id}", methods=["GET", "HEAD"])
    async def azure_v1_get_model(req: Request) -> Response:
        return await handle(req, gateway.get_model)

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

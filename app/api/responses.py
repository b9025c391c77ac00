"""POST /v1/responses: the Responses API, stateless, over the chat completion path; and the stateful routes it
does not offer, answered with a 404 that says why."""
from flask import Blueprint

from app.api import load_body, reply
from app.documented import GENERATION_ERRORS, OtherRule, documented
from app.errors import ApiError
from app.schemas.responses import RESPONSE_EVENT_COMPONENTS
from app.observability import current_record
from app.serving.responses_api import events, reply as responses, routed
from app.streaming import NamedEvents

bp = Blueprint("responses", __name__)

_NOT_STORED = {404: "Always: this server does not store responses."}


@bp.post("/v1/responses")
@documented("responses", request="responses", response="Response", stream=RESPONSE_EVENT_COMPONENTS,
            errors=GENERATION_ERRORS)
def create_response():
    """Create a response

    Served as a chat completion (templates, tools, JSON mode, images, limits and errors as there), statelessly:
    nothing is stored, `store` is treated as false. With `stream: true` the reply is the Responses API's event
    sequence: named server-sent events ending with response.completed or response.incomplete (no [DONE]).
    """
    params = load_body("responses")
    chat_body = params["responses"].pop("chat")  # not logged with the params: it holds the images' data
    return reply(params, responses.create_response, events.stream_response, framing=NamedEvents,
                 usage=responses.chat_usage, relay=routed.relayed(chat_body, current_record().request_id))


@bp.get("/v1/responses/<response_id>")
@bp.get("/v1/responses/<response_id>/input_items")
@documented("responses", errors=(401, 404), error_notes=_NOT_STORED, other_rules={
    "/v1/responses/<response_id>/input_items": OtherRule("listResponseInputItems",
                                                         "List a response's input items (not stored)",
                                                         "Always 404: responses are not stored.")})
def get_response(response_id: str):
    """Retrieve a response (not stored)

    Always 404: this server does not store responses.
    """
    raise _not_stored(response_id)


@bp.delete("/v1/responses/<response_id>")
@documented("responses", errors=(401, 404), error_notes=_NOT_STORED)
def delete_response(response_id: str):
    """Delete a response (not stored)

    Always 404: this server does not store responses.
    """
    raise _not_stored(response_id)


@bp.post("/v1/responses/<response_id>/cancel")
@documented("responses", errors=(401, 404), error_notes=_NOT_STORED)
def cancel_response(response_id: str):
    """Cancel a response (not stored)

    Always 404: this server does not store responses, and runs none in the background.
    """
    raise _not_stored(response_id)


def _not_stored(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found: this server does not store responses "
                    "(store is treated as false), so none can be retrieved, listed, deleted or cancelled.",
                    param="response_id")

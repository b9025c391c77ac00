"""Images on the chat path, between validation and the prompt: only a model whose workers registered as
multimodal gets them, http(s) image URLs are fetched once per request (before failover picks a worker), and every
image reaches the worker as base64 in the payload's `images`.

Plain base64, no data: prefix: that is what FastChat HEAD's own image path sends (Conversation.get_images gives
each image's base64_str), and its sglang worker hands each entry to sglang's load_image, which decodes raw base64
(it would fetch an http URL or open a local path, which is why it gets neither).
"""
from __future__ import annotations

from app.errors import ApiError, model_not_found, unsupported_parameter
from app.images.parts import IMAGE_TOO_LARGE, Image, ImageError, ImageUrl
from app.serving.cluster import Cluster


def images_of(messages: list[dict] | str) -> list[Image | ImageUrl]:
    """Every image of the messages, in the order the prompt places them."""
    if isinstance(messages, str):
        return []
    return [image for message in messages for image in message.get("images") or ()]


def with_images_ready(params: dict, cluster: Cluster) -> dict:
    """params with every image URL replaced by the fetched, checked image (params itself when nothing needs
    fetching). Raises 400 naming the first image part when the model does not accept images (nothing is fetched
    then), or naming the part whose fetch failed."""
    images = images_of(params["messages"])
    if not images:
        return params
    model = params["model"]
    if not cluster.accepts_images(model):
        if not cluster.controller.has_model(model):
            raise model_not_found(model)
        raise unsupported_parameter(images[0].param, f"The model `{model}` does not accept image input (its "
                                                     f"workers did not register as multimodal).")
    if not any(isinstance(image, ImageUrl) for image in images):
        return params
    # Fetched bytes count toward the body limit as if the client had sent them inline.
    left = cluster.body_limit - params.get("body_bytes", 0)
    messages = []
    for message in params["messages"]:
        if message.get("images"):
            loaded = []
            for image in message["images"]:
                if isinstance(image, ImageUrl):
                    image = _fetched(cluster, image, left)
                    left -= len(image.data)
                loaded.append(image)
            message = {**message, "images": loaded}
        messages.append(message)
    return {**params, "messages": messages}


def _fetched(cluster: Cluster, part: ImageUrl, left: int) -> Image:
    limit = cluster.image_rules.max_bytes
    try:
        return cluster.fetch_image(part, min(limit, max(left, 0)))
    except ImageError as exc:
        message = exc.message
        if exc.code == IMAGE_TOO_LARGE and left < limit:
            message = (f"{message} The request body and the images fetched for it may not exceed "
                       f"{cluster.body_limit} bytes together (MAX_REQUEST_BODY_BYTES).")
        raise ApiError(400, message, param=part.param, code=exc.code) from None

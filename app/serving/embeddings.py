"""Embeddings: inputs batched to one worker, results in input order, base64 always float32 (what the openai SDK
decodes), whatever the worker's dtype."""
from __future__ import annotations

import base64
import struct

from app.errors import invalid_request
from app.serving import payloads
from app.serving.cluster import Cluster
from app.serving.token_ids import decode_inputs
from app.upstream.errors import BAD_RESPONSE, UpstreamError


def create_embeddings(params: dict, cluster: Cluster) -> dict:
    """Raises 400 when `dimensions` differs from the model's; the worker is asked for floats in every case."""
    model = params["model"]
    if not model:
        raise invalid_request("You must provide a model, in the body or in the path.", "model")
    texts = decode_inputs(params["input"], model, "input")
    vectors, tokens = cluster.run_on_worker(model, lambda address: _embed(cluster, address, model, texts,
                                                                          params["dimensions"]))
    encoded = [encode_base64(vector) for vector in vectors] if params["encoding_format"] == "base64" else vectors
    return payloads.embedding_list(model, encoded, tokens)


def _embed(cluster: Cluster, address: str, model: str, texts: list[str],
           dimensions: int | None) -> tuple[list[list[float]], int]:
    """Every input's vector, batch by batch from one worker, and the tokens it counted."""
    size = cluster.embedding_batch_size
    vectors: list[list[float]] = []
    tokens = 0
    for start in range(0, len(texts), size):
        batch = texts[start:start + size]
        reply = cluster.workers.embed(address, {"model": model, "input": batch, "encoding_format": "float"})
        batch_vectors = _vectors(reply, len(batch))
        if dimensions is not None and len(batch_vectors[0]) != dimensions:
            raise invalid_request(f"This model's embeddings have {len(batch_vectors[0])} dimensions; dimensions "
                                  "must be that number or omitted (reduced dimensions are not supported).",
                                  "dimensions")
        vectors.extend(batch_vectors)
        tokens += reply["token_num"] if isinstance(reply.get("token_num"), int) else 0
    return vectors, tokens


def encode_base64(vector: list[float]) -> str:
    """Little-endian float32, the only encoding the openai SDK decodes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _vectors(reply: dict, expected: int) -> list[list[float]]:
    vectors = reply.get("embedding")
    valid = (isinstance(vectors, list) and len(vectors) == expected and all(
        isinstance(vector, list) and vector and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                    for x in vector) for vector in vectors))
    if not valid:
        raise UpstreamError(BAD_RESPONSE, f"The worker did not return {expected} embeddings of numbers.")
    return vectors

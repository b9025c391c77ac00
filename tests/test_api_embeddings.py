import base64
import struct

import pytest
from responses import matchers

from tests.fakes import MODEL, WORKER

EMBEDDINGS = "/v1/embeddings"


def vector(seed: float, dim: int = 3) -> list[float]:
    return [seed + i / 10 for i in range(dim)]


def ready(cluster, model=MODEL):
    cluster.serves(model)
    cluster.routes(model)


def embeds(upstream, inputs, dim=3, token_num=None):
    return upstream.post(f"{WORKER}/worker_get_embeddings",
                         match=[matchers.json_params_matcher({"model": MODEL, "input": inputs,
                                                              "encoding_format": "float"})],
                         json={"embedding": [vector(len(text), dim) for text in inputs],
                               "token_num": token_num if token_num is not None else len(inputs)})


def test_inputs_are_batched_in_order_with_indexes_and_usage(client, cluster, upstream):
    ready(cluster)
    inputs = ["a", "bb", "ccc", "dddd", "eeeee", "f"]
    embeds(upstream, inputs[:4], token_num=7)
    embeds(upstream, inputs[4:], token_num=3)
    body = client.post(EMBEDDINGS, json={"model": MODEL, "input": inputs}).get_json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [item["index"] for item in body["data"]] == list(range(6))
    assert [item["embedding"] for item in body["data"]] == [vector(len(text)) for text in inputs]
    assert body["usage"] == {"prompt_tokens": 10, "total_tokens": 10}


def test_a_single_string_input(client, cluster, upstream):
    ready(cluster)
    embeds(upstream, ["hello"])
    assert len(client.post(EMBEDDINGS, json={"model": MODEL, "input": "hello"}).get_json()["data"]) == 1


def test_base64_is_little_endian_float32(client, cluster, upstream):
    ready(cluster)
    embeds(upstream, ["hello"])
    body = client.post(EMBEDDINGS, json={"model": MODEL, "input": "hello", "encoding_format": "base64"}).get_json()
    decoded = struct.unpack("<3f", base64.b64decode(body["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector(5))


def test_the_engines_path_gives_the_model_and_the_body_wins(client, cluster, upstream):
    ready(cluster)
    embeds(upstream, ["x"])
    assert client.post(f"/v1/engines/{MODEL}/embeddings", json={"input": "x"}).status_code == 200
    embeds(upstream, ["y"])
    response = client.post("/v1/engines/other/embeddings", json={"model": MODEL, "input": "y"})
    assert response.status_code == 200


def test_no_model_anywhere_is_400(client):
    assert client.post(EMBEDDINGS, json={"input": "x"}).get_json()["error"]["param"] == "model"


def test_dimensions_must_match_the_model(client, cluster, upstream):
    ready(cluster)
    embeds(upstream, ["x"])
    response = client.post(EMBEDDINGS, json={"model": MODEL, "input": "x", "dimensions": 2})
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "dimensions"
    embeds(upstream, ["x"])
    assert client.post(EMBEDDINGS, json={"model": MODEL, "input": "x", "dimensions": 3}).status_code == 200


@pytest.mark.parametrize("body, param", [
    ({"input": ""}, "input"), ({"input": []}, "input"), ({"input": ["a", ""]}, "input"), ({"input": [[]]}, "input"),
    ({"input": [1, "a"]}, "input"), ({"input": None}, "input"), ({"encoding_format": "int8"}, "encoding_format"),
    ({"dimensions": 0}, "dimensions")])
def test_invalid_inputs_are_400(client, body, param):
    response = client.post(EMBEDDINGS, json={"model": MODEL, "input": "x", **body})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


def test_worker_error_is_reported(client, cluster, upstream):
    ready(cluster)
    upstream.post(f"{WORKER}/worker_get_embeddings", json={"text": "CUDA out of memory", "error_code": 50002})
    response = client.post(EMBEDDINGS, json={"model": MODEL, "input": "x"})
    assert response.status_code == 503 and response.get_json()["code"] == 50002


def test_worker_without_embeddings_is_502(client, cluster, upstream):
    ready(cluster)
    upstream.post(f"{WORKER}/worker_get_embeddings", status=404, json={"detail": "Not Found"})
    assert client.post(EMBEDDINGS, json={"model": MODEL, "input": "x"}).status_code == 502


@pytest.mark.parametrize("reply", [{"embedding": [[0.1]], "token_num": 1}, {"embedding": ["AAAA", "BBBB"]},
                                   {"embedding": [[0.1, "x"], [0.2, 0.3]]}, {"token_num": 2}])
def test_malformed_worker_embeddings_are_502(client, cluster, upstream, reply):
    ready(cluster)
    upstream.post(f"{WORKER}/worker_get_embeddings", json=reply)
    assert client.post(EMBEDDINGS, json={"model": MODEL, "input": ["a", "b"]}).status_code == 502

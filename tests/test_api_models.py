import requests

from tests.fakes import CONTROLLER


def test_list_models_sorted_with_fastchat_card_fields(client, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.serves("b-model", "a-model")
    body = client.get("/v1/models").get_json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a-model", "b-model"]
    card = body["data"][0]
    assert (card["object"], card["owned_by"], card["root"], card["parent"]) == ("model", "fastchat", "a-model", None)
    assert card["permission"][0]["object"] == "model_permission"
    assert card["permission"][0]["id"].startswith("modelperm-")


def test_listing_does_not_refresh_workers_on_every_request(client, cluster, upstream):
    refresh = upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    listing = cluster.serves("m")
    for _ in range(3):
        assert client.get("/v1/models").status_code == 200
    assert (refresh.call_count, listing.call_count) == (1, 3)


def test_empty_cluster_lists_nothing(client, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    cluster.serves()
    assert client.get("/v1/models").get_json() == {"object": "list", "data": []}


def test_retrieve_model(client, cluster):
    cluster.serves("meta-llama/Llama-2-7b-chat-hf")
    body = client.get("/v1/models/meta-llama/Llama-2-7b-chat-hf").get_json()
    assert body["id"] == "meta-llama/Llama-2-7b-chat-hf" and body["object"] == "model"


def test_retrieve_unknown_model_is_404(client, cluster):
    cluster.serves("m")
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "model_not_found"


def test_controller_down_is_503(client, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", body=requests.ConnectionError())
    cluster.unreachable(f"{CONTROLLER}/list_models")
    assert client.get("/v1/models").status_code == 503


def test_health_makes_no_upstream_call(client, upstream):
    assert client.get("/health").get_json() == {"status": "ok"}

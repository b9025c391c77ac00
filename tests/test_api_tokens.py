from tests.fakes import MODEL

TOKEN_CHECK = "/api/v1/token_check"


def test_fits_token_count_and_context(client, cluster):
    cluster.serves(MODEL)  # listed once: the list is cached for MODEL_LIST_TTL
    cluster.routes()  # picked once: reused within WORKER_PICK_INTERVAL
    for _ in range(2):
        cluster.counts(4)
    cluster.context(64)  # fetched once per (worker, model)
    body = client.post(TOKEN_CHECK, json={"prompts": [{"model": MODEL, "prompt": "a", "max_tokens": 60},
                                                      {"model": MODEL, "prompt": "b", "max_tokens": 61}]}).get_json()
    assert body == {"prompts": [{"fits": True, "tokenCount": 4, "contextLength": 64},
                                {"fits": False, "tokenCount": 4, "contextLength": 64}]}


def test_unknown_model_is_404_not_500(client, cluster):
    cluster.serves("other")
    response = client.post(TOKEN_CHECK, json={"prompts": [{"model": "nope", "prompt": "a", "max_tokens": 1}]})
    assert response.status_code == 404


def test_requires_every_field(client):
    response = client.post(TOKEN_CHECK, json={"prompts": [{"model": MODEL, "prompt": "a"}]})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "prompts[0].max_tokens"


def test_empty_prompt_list_is_400(client):
    assert client.post(TOKEN_CHECK, json={"prompts": []}).status_code == 400

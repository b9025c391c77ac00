"""FastChat's /api/v1/token_check: does each prompt plus max_tokens fit the model's context?"""
from __future__ import annotations

from app.errors import ApiError
from app.serving.cluster import Cluster


def check_tokens(params: dict, cluster: Cluster) -> dict:
    """Raises 404 for an unknown model (FastChat crashed with a 500), 400 for a routed one: the OpenAI API an
    upstream speaks has no token count or context length to ask for."""
    for index, item in enumerate(params["prompts"]):
        if cluster.routes(item["model"]):
            raise ApiError(400, f"The model `{item['model']}` is served by an OpenAI-compatible upstream "
                                "(ROUTES_FILE), which has no token count to ask for: /api/v1/token_check covers "
                                "FastChat workers' models only.", param=f"prompts.{index}.model",
                           code="unsupported_model")

    def check(item: dict) -> dict:
        def attempt(address: str) -> tuple[int | None, int]:
            return (cluster.workers.context_length(address, item["model"]),
                    cluster.workers.count_tokens(address, item["model"], item["prompt"]))

        context, count = cluster.run_on_worker(item["model"], attempt)
        return {"fits": context is None or count + item["max_tokens"] <= context, "tokenCount": count,
                "contextLength": context}

    return {"prompts": cluster.map(check, params["prompts"])}

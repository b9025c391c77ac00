"""FastChat's /api/v1/token_check: does each prompt plus max_tokens fit the model's context?"""
from __future__ import annotations

from app.serving.cluster import Cluster


def check_tokens(params: dict, cluster: Cluster) -> dict:
    """Raises 404 for an unknown model (FastChat crashed with a 500)."""
    def check(item: dict) -> dict:
        def attempt(address: str) -> tuple[int | None, int]:
            return (cluster.workers.context_length(address, item["model"]),
                    cluster.workers.count_tokens(address, item["model"], item["prompt"]))

        context, count = cluster.run_on_worker(item["model"], attempt)
        return {"fits": context is None or count + item["max_tokens"] <= context, "tokenCount": count,
                "contextLength": context}

    return {"prompts": cluster.map(check, params["prompts"])}

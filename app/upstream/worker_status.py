"""A worker's /worker_get_status: the one figure of its load it reports.

FastChat's queue_length is `limit_worker_concurrency - free permits + waiters` of the worker's semaphore: the
requests it is generating plus those waiting for a permit, from every client of the worker (0 until its first
request). It does not report the limit itself, nor per-model figures on a multi-model worker.
"""
from __future__ import annotations

from app.upstream.client import Timeout, UpstreamClient
from app.upstream.errors import BAD_RESPONSE, UpstreamError


def read_queue_length(client: UpstreamClient, address: str, timeout: Timeout) -> int:
    """The worker's queue_length now. Raises UpstreamError when it cannot be reached or sends something else."""
    reply = client.post_json(address + "/worker_get_status", None, timeout=timeout, upstream="worker")
    queue_length = reply.get("queue_length") if isinstance(reply, dict) else None
    if not isinstance(queue_length, int) or isinstance(queue_length, bool) or queue_length < 0:
        raise UpstreamError(BAD_RESPONSE, "The worker sent an invalid status.", upstream="worker")
    return queue_length

"""Simulated FastChat model worker: a TEST AND BENCHMARK TOOL, not a model server.

It speaks the FastChat controller/worker wire protocol (fastchat-protocol.md §5 and §6) closely enough that the
gateway cannot tell it from a real ``fastchat.serve.model_worker``, but it generates deterministic filler text
instead of running a model: tests can assert what the gateway sent and how it reacts to worker faults, and
benchmarks measure the gateway rather than the worker. Run from the repository root::

    python -m bench.simworker --port 21002 --controller-address http://127.0.0.1:21001 --model-names sim-model

One job per module: ``generation`` (the deterministic model: text, tokens, logprobs, embeddings), ``faults``
(fault injection), ``scripted`` (the tool calls, tool-result answers and JSON objects it gives prompts that
ask for them), ``vision`` (with ``--multimodal``: the image checks of FastChat's sglang_worker and a reply that
describes the images received), ``limiter`` (the concurrency limit and queue length), ``templates`` (the
conversation template it reports), ``registration`` (controller registration and heartbeat), ``app`` (the routes),
``server`` (the HTTP layer, aiohttp), ``cli`` (the command line). Only ``app`` and ``server`` know about HTTP.
"""

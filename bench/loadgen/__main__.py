"""`python -m bench.loadgen`: one load against a running server or worker, printed as JSON."""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from bench.loadgen.runner import raise_nofile_limit, run_hold, run_load
from bench.loadgen.targets import Target, chat_request, worker_request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description="Closed-loop load against one OpenAI-compatible server or "
                                                 "FastChat worker (see bench/benchmark.py for the full run).")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000 (comma-separated "
                                                     "for several workers)")
    parser.add_argument("--kind", choices=("openai", "worker"), default="openai")
    parser.add_argument("--model", required=True)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-t", "--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--api-key")
    parser.add_argument("--hold", type=int, help="instead: open this many streams at once and hold them")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    addresses = []
    for url in args.url.split(","):
        parts = urlsplit(url.strip())
        addresses.append((parts.hostname, parts.port or 80))
    message = "Tell me about the history of the printing press."
    if args.kind == "openai":
        path = "/v1/chat/completions"
        body = chat_request(args.model, message, args.max_tokens, args.stream or bool(args.hold))
    else:
        path = "/worker_generate_stream" if args.stream or args.hold else "/worker_generate"
        body = worker_request(args.model, f"USER: {message} ASSISTANT:", args.max_tokens)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    target = Target("cli", args.kind, addresses, path, body, args.stream or bool(args.hold), headers)
    if args.hold:
        result = run_hold(target, args.hold, timeout=args.timeout)
    else:
        result = run_load(target, args.concurrency, args.requests, args.seconds, warmup_requests=args.warmup,
                          timeout=args.timeout)
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

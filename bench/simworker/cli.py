"""The command line: ``python -m bench.simworker --port 21002 [--controller-address URL] ...``."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from bench.simworker.faults import MODES
from bench.simworker.registration import Registrar
from bench.simworker.templates import NUMBERINGS, TEMPLATES

logger = logging.getLogger("simworker")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.simworker",
        description=(
            "Simulated FastChat model worker: a TEST AND BENCHMARK TOOL. Speaks the FastChat controller/worker "
            "protocol (registration, heartbeat, /worker_generate_stream NUL-delimited cumulative JSON frames, "
            "/worker_generate, /worker_get_embeddings, /count_token, /model_details, /worker_get_conv_template, "
            "/worker_get_status) with deterministic fake text, plus fault injection (POST /sim/fault, "
            "[[fault:MODE]] prompt directives) and introspection (/sim/stats, /sim/images, /sim/reset). It runs no "
            "model."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0 picks a free port")
    p.add_argument("--worker-address", default=None,
                   help="address registered with the controller (default http://HOST:PORT)")
    p.add_argument("--controller-address", default=None, help="register with this controller and send heartbeats")
    p.add_argument("--no-register", action="store_true")
    p.add_argument("--heartbeat-interval", type=float, default=45.0)
    p.add_argument("--model-names", default="sim-model", help="comma-separated")
    p.add_argument("--conv-template", default="vicuna_v1.1",
                   help="one of: " + ", ".join(sorted(TEMPLATES)) + " (qwen-7b-chat, llama-3 and mistral get the "
                        "gateway's hermes, llama3_json and mistral tool formats)")
    p.add_argument("--sep-style-numbering", choices=NUMBERINGS, default="head",
                   help="SeparatorStyle numbering / key set of the template wire JSON")
    p.add_argument("--context-length", type=int, default=2048)
    p.add_argument("--tokens", type=int, default=16,
                   help="completion tokens per request when max_new_tokens is larger")
    p.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    p.add_argument("--prefill-delay", type=float, default=0.0,
                   help="seconds before the first token (and before embeddings replies)")
    p.add_argument("--stream-interval", type=int, default=1, help="emit every k tokens")
    p.add_argument("--limit-worker-concurrency", type=int, default=1024)
    p.add_argument("--fault", choices=MODES, default="none", help="default fault mode for generation requests")
    p.add_argument("--fault-after", type=int, default=2,
                   help="tokens streamed before error/oom/die/hang/garbage faults")
    p.add_argument("--fault-delay", type=float, default=5.0, help="extra first-token delay of slow-first-token")
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--usage-off-by-one", action="store_true",
                   help="report completion_tokens as the HF worker's 0-based step index")
    p.add_argument("--multimodal", action="store_true",
                   help="a vision worker: registers with \"multimodal\": true, refuses a request whose $$<image>$$ "
                        "placeholders are not one per image or whose images are not base64 (an error frame, like "
                        "FastChat's sglang_worker), and answers one with images with a description of them")
    p.add_argument("--payload-log", type=int, default=50,
                   help="generation and embeddings payloads kept for /sim/stats and /sim/images (0: none)")
    p.add_argument("--backlog", type=int, default=4096)
    return p


def _error(message: str, code: int) -> int:
    sys.stderr.write(f"simworker: error: {message}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tokens < 0 or args.stream_interval < 1 or args.embedding_dim < 1 or args.payload_log < 0:
        return _error("--tokens and --payload-log must be >= 0, --stream-interval and --embedding-dim >= 1", 2)
    logging.basicConfig(level=logging.INFO, format="[simulated-worker] %(message)s", stream=sys.stderr)
    # Imported here so that --help and argument errors do not pay for aiohttp's import.
    from bench.simworker.app import SimulatedWorker
    from bench.simworker.server import serve
    try:
        worker = SimulatedWorker(args)
    except ValueError as exc:
        return _error(str(exc), 2)
    registrar = None

    def on_listening(port: int) -> None:
        nonlocal registrar
        address = args.worker_address or f"http://{args.host}:{port}"
        if args.controller_address and not args.no_register:
            registrar = Registrar(args.controller_address, address, args.heartbeat_interval, worker.status,
                                  lambda: worker.limiter.queue_length, multimodal=args.multimodal)
            registrar.start()
        logger.info("simulated worker listening on http://%s:%d (worker_address=%s, models=%s, template=%s/%s, "
                    "multimodal=%s, controller=%s, pid=%d)", args.host, port, address, ",".join(worker.model_names),
                    args.conv_template, args.sep_style_numbering, args.multimodal,
                    args.controller_address if registrar else "none", os.getpid())

    try:
        asyncio.run(serve(worker, args.host, args.port, args.backlog, on_listening))
    except OSError as exc:
        return _error(str(exc), 1)
    finally:
        if registrar is not None:
            registrar.stop()
    logger.info("simulated worker stopped")
    return 0

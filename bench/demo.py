"""`make demo`: a working local stack with no GPU, no model and no controller.

Starts two simulated FastChat workers (bench/simulated_worker.py, a test and benchmark tool that generates
deterministic fake text) and the gateway under gunicorn in no-controller mode (WORKER_ADDRESSES), prints how to
call it, and stops everything it started, by PID, on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def wait_ready(url: str, proc: subprocess.Popen, method: str = "GET", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {proc.args[0]} exited with code {proc.returncode}; see the output above")
        try:
            urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None),
                                   timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: {url} did not answer within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", 8000)), help="gateway port")
    parser.add_argument("--worker-ports", default="21002,21003", help="simulated worker ports")
    parser.add_argument("--model", default="demo-model")
    args = parser.parse_args()

    children: list[subprocess.Popen] = []

    def stop_all(*_):
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    addresses = []
    for port in args.worker_ports.split(","):
        address = f"http://127.0.0.1:{port}"
        children.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "simulated_worker.py"), "--port", port,
                                          "--no-register", "--model-names", args.model, "--tokens", "24",
                                          "--token-delay", "0.02"]))
        wait_ready(f"{address}/worker_get_status", children[-1], method="POST")
        addresses.append(address)
    url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "WORKER_ADDRESSES": ",".join(addresses), "BIND": f"127.0.0.1:{args.port}"}
    env.pop("CONTROLLER_ADDRESS", None)
    children.append(subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                                     env=env))
    wait_ready(f"{url}/health", children[-1])
    key = env.get("API_KEYS", "").split(",")[0].strip() or "anything"
    print(f"""
fastchat-gateway demo is running at {url}/v1 (model "{args.model}", two simulated workers, no controller).
The workers are simulators: their text is deterministic filler, not a model's answer.

  curl {url}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{args.model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="{key}"); \\
print(c.chat.completions.create(model="{args.model}", messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)'

Press Ctrl-C to stop everything.
""", flush=True)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    print("demo: a process exited unexpectedly; stopping the rest", file=sys.stderr)
    stop_all()


if __name__ == "__main__":
    main()

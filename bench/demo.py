"""`make demo`: a working local stack with no GPU, no model and no controller.

Starts two simulated FastChat workers (`python -m bench.simworker`, a test and benchmark tool that generates
deterministic fake text) and the gateway under gunicorn in no-controller mode (WORKER_ADDRESSES), prints how to
call it, and stops everything it started, by PID, on Ctrl-C (or SIGTERM).

Every port is settable (`make demo DEMO_PORT=8001 DEMO_WORKER_PORTS=21002,21003`); 0 or `auto` picks free ones.
A port that is taken ends the demo at once with a message and exit status 1, before anything starts: the demo never
prints its banner in front of somebody else's server.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
# A ChatML template: the gateway gives it the Hermes tool format, so the tool-calling example works.
TEMPLATE = "qwen-7b-chat"
WEATHER_TOOL = ('{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.", '
                '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}')


class DemoError(Exception):
    """The demo cannot run; the message says why."""


def claim_port(port: int, setting: str) -> int:
    """`port`, or a free port when it is 0, after checking that nothing listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise DemoError(f"port {port} on {HOST} is in use ({exc.strerror}); choose another with {setting}=PORT, "
                            f"or {setting}=0 for a free one") from None
        return sock.getsockname()[1]


def worker_ports(value: str) -> list[int]:
    if value.strip().lower() in ("", "auto"):
        return [0, 0]
    try:
        ports = [int(port) for port in value.split(",")]
    except ValueError:
        raise DemoError(f"DEMO_WORKER_PORTS must be 'auto' or comma-separated port numbers, got {value!r}") from None
    if not ports:
        raise DemoError("DEMO_WORKER_PORTS names no port")
    return ports


def wait_ready(url: str, proc: subprocess.Popen, method: str = "GET", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{' '.join(map(str, proc.args[:3]))} exited with code {proc.returncode}; "
                            "see the output above")
        try:
            urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None),
                                   timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise DemoError(f"{url} did not answer within {timeout:.0f} s")


def start(args: argparse.Namespace, children: list[subprocess.Popen]) -> str:
    """Start the workers and the gateway (appending each to `children`); return the gateway's URL."""
    gateway_port = claim_port(args.port, "DEMO_PORT")
    ports = [claim_port(port, "DEMO_WORKER_PORTS") for port in worker_ports(args.worker_ports)]
    if len(set(ports + [gateway_port])) != len(ports) + 1:
        raise DemoError(f"the gateway and the workers need distinct ports, got {gateway_port} and {ports}")
    addresses = []
    for port in ports:
        address = f"http://{HOST}:{port}"
        children.append(subprocess.Popen([sys.executable, "-m", "bench.simworker", "--host", HOST, "--port", str(port),
                                          "--no-register", "--model-names", args.model, "--tokens", "24",
                                          "--token-delay", "0.02", "--conv-template", TEMPLATE], cwd=ROOT))
        wait_ready(f"{address}/worker_get_status", children[-1], method="POST")
        addresses.append(address)
    env = {**os.environ, "WORKER_ADDRESSES": ",".join(addresses), "BIND": f"{HOST}:{gateway_port}"}
    env.pop("CONTROLLER_ADDRESS", None)
    children.append(subprocess.Popen([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                                     env=env))
    url = f"http://{HOST}:{gateway_port}"
    wait_ready(f"{url}/health", children[-1])
    return url


def banner(url: str, model: str, key: str) -> str:
    return f"""
fastchat-gateway demo is running at {url}/v1 (model "{model}", two simulated workers, no controller).
The workers are simulators: their text is deterministic filler (or a scripted tool call), not a model's answer.

  curl {url}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(base_url="{url}/v1", api_key="{key}"); \\
print(c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)'

Tool calling (the workers answer a tool offer with a call, and the tool's result with a text that quotes it):

  curl {url}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": [{WEATHER_TOOL}]}}'

Press Ctrl-C to stop everything.
"""


def stop(children: list[subprocess.Popen]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT") or 8000),
                        help="gateway port (env DEMO_PORT; 0: a free port)")
    parser.add_argument("--worker-ports", default=os.environ.get("DEMO_WORKER_PORTS") or "auto",
                        help="simulated worker ports, comma-separated (env DEMO_WORKER_PORTS; auto: free ports)")
    parser.add_argument("--model", default="demo-model")
    args = parser.parse_args(argv)

    children: list[subprocess.Popen] = []

    def on_signal(*_) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does

    signal.signal(signal.SIGTERM, on_signal)
    try:
        url = start(args, children)
        key = os.environ.get("API_KEYS", "").split(",")[0].strip() or "anything"
        print(banner(url, args.model, key), flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("demo: a process exited unexpectedly; stopping the rest", file=sys.stderr)
        return 1
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(children)


if __name__ == "__main__":
    sys.exit(main())

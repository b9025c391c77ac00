"""Two workers for one model, one killed: new requests keep succeeding, with and without a controller."""
import openai

from harness.fastchat import wait_registered
from harness.gateway import Gateway
from harness.simworkers import SimulatedWorker


def run_requests(gateway, model, count=20):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0, timeout=30)
    try:
        for i in range(count):
            if i % 2:
                chunks = list(client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": f"q{i}"}], stream=True))
                assert chunks[-1].choices[0].finish_reason == "stop"
            else:
                reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"q{i}"}])
                assert reply.choices[0].message.content
    finally:
        client.close()


def test_with_the_fastchat_controller(fastchat_controller, run_dir):
    ctl = fastchat_controller.address
    first = SimulatedWorker(run_dir, controller=ctl, model="failover-model", name="sim-failover-1")
    second = SimulatedWorker(run_dir, controller=ctl, model="failover-model", name="sim-failover-2")
    gateway = None
    try:
        wait_registered(ctl, "failover-model")
        gateway = Gateway(run_dir, name="gateway-failover", CONTROLLER_ADDRESS=ctl, WEB_CONCURRENCY="2")
        run_requests(gateway, "failover-model", count=4)
        first.stop()  # still registered with the controller: it would be picked without failover
        run_requests(gateway, "failover-model")
        assert second.stats()["requests"]["/worker_generate"] >= 10
    finally:
        for proc in (gateway, first, second):
            if proc is not None:
                proc.stop()


def test_without_a_controller(run_dir):
    first = SimulatedWorker(run_dir, model="static-failover", name="sim-static-1")
    second = SimulatedWorker(run_dir, model="static-failover", name="sim-static-2")
    gateway = None
    try:
        gateway = Gateway(run_dir, name="gateway-static-failover", WORKER_ADDRESSES=f"{first.address},{second.address}",
                          WORKER_STATUS_INTERVAL="30")  # long: failover, not polling, must save these requests
        run_requests(gateway, "static-failover", count=4)
        first.stop()
        run_requests(gateway, "static-failover")
    finally:
        for proc in (gateway, first, second):
            if proc is not None:
                proc.stop()

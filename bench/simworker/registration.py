"""Registration with a FastChat controller and the heartbeat that keeps it (a background thread, stdlib urllib)."""
from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable

logger = logging.getLogger("simworker")


class Registrar(threading.Thread):
    """POST /register_worker, then /receive_heart_beat every `interval` s; registers again when the controller
    has forgotten the worker, and never gives up (a controller that is down is retried every min(5, interval) s).

    status: the worker's /worker_get_status reply; queue_length: its current queue length; multimodal: the
    registration's "multimodal" flag (every registration, the re-registrations too, carries it).
    """

    def __init__(self, controller: str, address: str, interval: float, status: Callable[[], dict],
                 queue_length: Callable[[], int], multimodal: bool = False) -> None:
        super().__init__(name="sim-heartbeat", daemon=True)
        self.controller = controller.rstrip("/")
        self.address = address
        self.interval = interval
        self.status = status
        self.queue_length = queue_length
        self.multimodal = multimodal
        self.stop_event = threading.Event()
        self.retry = min(5.0, interval)

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.controller + path, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
        return json.loads(body) if body.strip() else None

    def register(self) -> bool:
        try:
            self.post("/register_worker", {"worker_name": self.address, "check_heart_beat": True,
                                           "worker_status": self.status(), "multimodal": self.multimodal})
            return True
        except Exception as exc:  # never crash: log and retry
            logger.warning("register_worker at %s failed: %r", self.controller, exc)
            return False

    def run(self) -> None:
        registered = False
        wait = 0.0
        while not self.stop_event.wait(wait):
            if not registered:
                registered = self.register()
                wait = self.interval if registered else self.retry
                continue
            try:
                reply = self.post("/receive_heart_beat",
                                  {"worker_name": self.address, "queue_length": self.queue_length()})
                exist = reply.get("exist") if isinstance(reply, dict) else None
            except Exception as exc:
                logger.warning("heartbeat to %s failed: %r", self.controller, exc)
                wait = self.retry
                continue
            if exist is None:
                logger.warning("heartbeat reply without 'exist': %r", reply)
                wait = self.retry
            elif not exist:
                logger.warning("controller does not know this worker; re-registering")
                registered = False
                wait = 0.0
            else:
                wait = self.interval

    def stop(self) -> None:
        self.stop_event.set()

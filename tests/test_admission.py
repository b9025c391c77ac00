"""Back-pressure (app.serving.admission): who is admitted, who gets 503 + Retry-After, and what is given back."""
import pytest

from app import create_app
from app.errors import ApiError
from app.settings import ConfigError
from app.serving.admission import WORKER_MEMORY, Admission, AdmissionRules, stream_limit
from app.upstream.errors import UNAVAILABLE, UpstreamError

MODEL = "m"
W1, W2 = "http://w1", "http://w2"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Workers:
    """Queue lengths the admission reads; an address mapped to an exception raises it."""

    def __init__(self, **queues):
        self.queues = {f"http://{name}": value for name, value in queues.items()}
        self.read: list[str] = []

    def __call__(self, address):
        self.read.append(address)
        value = self.queues[address]
        if isinstance(value, Exception):
            raise value
        return value


def admission(workers=None, clock=None, **rules) -> Admission:
    # No poller thread: each test polls when it means to, so it sees the outcome deterministically.
    adm = Admission(AdmissionRules(**rules), workers or Workers(w1=0, w2=0), clock=clock or Clock(),
                    start_poller=lambda poll_forever: pollers.append(poll_forever))
    pollers: list = []
    adm.pollers = pollers
    return adm


def fill(adm: Admission, count: int, model: str = MODEL, stream: bool = False) -> list:
    return [adm.admit(model, stream) for _ in range(count)]


def refused(adm: Admission, model: str = MODEL, stream: bool = False) -> ApiError:
    with pytest.raises(ApiError) as caught:
        adm.admit(model, stream)
    return caught.value


# ------------------------------------------------------------------------------------------ streams per process
def test_streams_beyond_the_process_cap_get_503_server_overloaded_with_retry_after():
    adm = admission(stream_limit=2)
    held = fill(adm, 2, stream=True)
    error = refused(adm, stream=True)
    assert (error.status, error.type, error.code) == (503, "service_unavailable_error", "server_overloaded")
    assert error.headers == {"Retry-After": "1"} and error.keep_status
    assert "2" in error.message and "retry" in error.message
    assert adm.admit(MODEL, False)  # a whole reply is not a stream
    held[0].release()
    assert adm.admit(MODEL, True) and adm.streams == 2


def test_a_ticket_gives_its_place_back_once():
    adm = admission(stream_limit=1)
    ticket = adm.admit(MODEL, True)
    ticket.release()
    ticket.release(object(), 200)  # also called as an on_finish callback (record, status)
    assert adm.streams == 0 and adm.in_flight(MODEL) == 0
    fill(adm, 1, stream=True)
    refused(adm, stream=True)


@pytest.mark.parametrize("setting, server, expected", [
    ("auto", {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 512, "GUNICORN_WORKER_CONNECTIONS": 1000}, 496),
    ("auto", {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 16, "GUNICORN_WORKER_CONNECTIONS": 1000}, 14),
    ("auto", {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 4, "GUNICORN_WORKER_CONNECTIONS": 1000}, 2),
    ("auto", {"GUNICORN_WORKER_CLASS": "sync", "GUNICORN_THREADS": 1, "GUNICORN_WORKER_CONNECTIONS": 1000}, 1),
    ("auto", {"GUNICORN_WORKER_CLASS": "gevent", "GUNICORN_THREADS": 512, "GUNICORN_WORKER_CONNECTIONS": 1000}, 984),
    ("auto", {"GUNICORN_WORKER_CLASS": "gunicorn.workers.ggevent.GeventWorker", "GUNICORN_THREADS": 4,
              "GUNICORN_WORKER_CONNECTIONS": 40}, 35),
    (7, {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 4, "GUNICORN_WORKER_CONNECTIONS": 4}, 7),
    ("off", {"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 4, "GUNICORN_WORKER_CONNECTIONS": 4}, None),
])
def test_the_stream_cap_is_below_what_a_process_can_hold(setting, server, expected):
    assert stream_limit(setting, server) == expected


# ------------------------------------------------------------------------------------------ per model
def test_without_worker_concurrency_there_is_no_model_cap_and_no_status_read():
    workers = Workers(w1=100)
    adm = admission(workers)
    fill(adm, 1)
    adm.routed(MODEL, W1)
    assert len(fill(adm, 200)) == 200 and workers.read == []


def test_a_model_is_capped_at_twice_what_its_workers_generate_at_once():
    adm = admission(Workers(w1=0), worker_concurrency=2)
    first = adm.admit(MODEL, False)
    adm.routed(MODEL, W1)
    fill(adm, 3)
    error = refused(adm)
    assert (error.status, error.type, error.code) == (503, "service_unavailable_error", "model_overloaded")
    assert "`m`" in error.message and "retry" in error.message.lower()
    assert int(error.headers["Retry-After"]) >= 1
    assert refused(adm, model=MODEL, stream=True).code == "model_overloaded"
    first.release()
    assert adm.admit(MODEL, False)
    assert adm.admit("other-model", False)  # another model's queue is its own


def test_model_queue_limit_sets_how_many_may_wait():
    adm = admission(Workers(w1=0, w2=0), worker_concurrency=2, queue_limit=1)
    fill(adm, 1)
    adm.routed(MODEL, W1)
    adm.routed(MODEL, W2)
    fill(adm, 4)  # 2 workers x 2 generating + 1 waiting = 5
    assert refused(adm).code == "model_overloaded"


def test_model_queue_limit_without_worker_concurrency_caps_everything_in_flight():
    adm = admission(Workers(w1=0), queue_limit=3)
    fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 2)
    refused(adm)


def test_a_worker_not_routed_to_for_a_minute_no_longer_counts():
    clock = Clock()
    adm = admission(Workers(w1=0), clock, worker_concurrency=1)
    fill(adm, 1)
    adm.routed(MODEL, W1)
    adm.routed(MODEL, W2)
    fill(adm, 3)  # 2 workers x (1 + 1)
    refused(adm)
    clock.now += WORKER_MEMORY + 1
    refused(adm)  # no worker routed to lately: the model counts as served by one, capped at 2


def test_an_unknown_model_counts_as_served_by_one_worker():
    adm = admission(worker_concurrency=2)
    fill(adm, 4, model="cold")
    assert refused(adm, model="cold").code == "model_overloaded"


def test_with_one_process_no_poller_starts_and_its_own_count_is_the_whole():
    workers = Workers(w1=0)
    adm = admission(workers, worker_concurrency=5, processes=1)  # cap 10
    fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 9)
    refused(adm)
    assert adm.pollers == [] and workers.read == []


def test_with_several_processes_the_first_capped_request_starts_one_poller():
    adm = admission(worker_concurrency=2, processes=2)
    fill(adm, 2)
    fill(adm, 2, model="other")
    assert len(adm.pollers) == 1


def test_a_process_borrows_the_room_other_processes_leave_as_the_workers_status_shows():
    workers = Workers(w1=2)  # the worker holds this process's 2 requests, the other process none
    adm = admission(workers, worker_concurrency=2, processes=2)  # cap 4, this process's share 2
    fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 1)
    adm.poll()
    assert workers.read == [W1]
    fill(adm, 1)  # 2 free at the read, half of it this process's until the next read
    refused(adm)
    workers.queues[W1] = 3
    adm.poll()
    fill(adm, 1)  # the other process took none of it: the last place is free
    assert refused(adm).code == "model_overloaded"


def test_a_process_below_its_share_is_refused_when_the_others_fill_the_workers():
    workers = Workers(w1=4)  # full: the other process holds 3 besides this one's request
    adm = admission(workers, worker_concurrency=2, processes=2)  # cap 4, share 2
    fill(adm, 1)
    adm.routed(MODEL, W1)
    adm.poll()
    assert refused(adm).code == "model_overloaded"


@pytest.mark.parametrize("queue_limit", [2, 3])
def test_a_burst_over_several_processes_overshoots_the_cap_by_at_most_one_per_process(queue_limit):
    processes: list[Admission] = []
    worker = lambda address: sum(adm.in_flight(MODEL) for adm in processes)  # noqa: E731
    for _ in range(3):
        adm = admission(worker, worker_concurrency=2, queue_limit=queue_limit, processes=3)
        learning = adm.admit(MODEL, False)
        adm.routed(MODEL, W1)
        learning.release()
        processes.append(adm)
    for adm in processes:
        adm.poll()  # idle workers
    admitted = 0
    for _ in range(10):  # the burst comes in turns to each process, faster than the next read
        for adm in processes:
            try:
                adm.admit(MODEL, True)
                admitted += 1
            except ApiError:
                pass
    cap = 2 + queue_limit
    assert cap <= admitted <= cap + len(processes) - 1


def test_what_this_process_ended_since_the_read_makes_room():
    workers = Workers(w1=4)
    adm = admission(workers, worker_concurrency=2, processes=2)
    held = fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 1)
    adm.poll()  # 4 at the worker, 2 of them this process's
    refused(adm)
    held[0].release()
    assert adm.admit(MODEL, False)


def test_before_any_status_and_when_none_can_be_read_the_share_is_the_cap():
    workers = Workers(w1=UpstreamError(UNAVAILABLE, "refused", upstream="worker"))
    adm = admission(workers, worker_concurrency=2, processes=2)  # cap 4, share 2
    fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 1)
    assert refused(adm).code == "model_overloaded"  # nothing read yet
    adm.poll()
    assert workers.read == [W1]
    assert refused(adm).code == "model_overloaded"  # nothing could be read


def test_a_stale_status_is_not_borrowed_on():
    clock = Clock()
    adm = admission(Workers(w1=0), clock, worker_concurrency=2, processes=2, status_ttl=1.0)
    fill(adm, 1)
    adm.routed(MODEL, W1)
    fill(adm, 1)
    adm.poll()  # idle workers: this process may borrow
    clock.now += 10  # the read is older than 4 TTLs
    refused(adm)
    clock.now -= 10
    assert adm.admit(MODEL, False)


def test_a_poll_forgets_models_with_nothing_in_flight_and_no_recent_worker():
    clock = Clock()
    adm = admission(Workers(w1=0), clock, worker_concurrency=2, processes=2)
    ticket = adm.admit(MODEL, False)
    adm.routed(MODEL, W1)
    ticket.release()
    adm.poll()
    assert MODEL in adm._models
    clock.now += WORKER_MEMORY + 1
    adm.poll()
    assert adm._models == {}


def test_the_poller_keeps_polling_after_a_failure_and_stops_when_closed():
    calls = []

    def read(address):
        calls.append(address)
        if len(calls) == 1:
            raise RuntimeError("unexpected")
        adm.close()
        return 0

    adm = Admission(AdmissionRules(worker_concurrency=2, processes=2, status_ttl=0.001), read,
                    start_poller=lambda poll_forever: None)
    adm.admit(MODEL, False)
    adm.routed(MODEL, W1)
    adm._poll_forever()  # returns once closed
    assert calls == [W1, W1]


def test_retry_after_is_the_mean_duration_times_the_queue_ahead_bounded():
    clock = Clock()
    adm = admission(Workers(w1=0), clock, worker_concurrency=2, retry_after_max=30)
    first = adm.admit(MODEL, False)
    adm.routed(MODEL, W1)
    clock.now += 10
    first.release()  # requests of this model take 10 s
    fill(adm, 4)
    # 4 in flight, 2 generating at once: the next one waits for 3 more to end, at 2 per 10 s
    assert refused(adm).headers["Retry-After"] == "15"
    adm.rules = AdmissionRules(worker_concurrency=2, retry_after_max=8)
    assert refused(adm).headers["Retry-After"] == "8"


def test_a_made_up_model_leaves_nothing_behind():
    adm = admission(worker_concurrency=2)
    adm.admit("no-such-model", False).release()
    assert adm._models == {}


def test_rules_from_settings():
    server = {"WEB_CONCURRENCY": 3, "GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": 16,
              "GUNICORN_WORKER_CONNECTIONS": 1000}
    config = {"WORKER_CONCURRENCY": 5, "MODEL_QUEUE_LIMIT": "auto", "MAX_STREAMS_PER_PROCESS": "auto",
              "QUEUE_STATUS_TTL": 0.5, "RETRY_AFTER_MAX": 20}
    rules = AdmissionRules.from_config(config, server)
    assert (rules.processes, rules.stream_limit, rules.status_ttl, rules.retry_after_max) == (3, 14, 0.5, 20)
    assert rules.model_limit(2) == 20 and rules.model_limit(0) is None
    assert AdmissionRules.from_config({**config, "MODEL_QUEUE_LIMIT": 4}, server).model_limit(2) == 14
    assert AdmissionRules.from_config({**config, "MODEL_QUEUE_LIMIT": "off"}, server).model_limit(2) is None
    assert AdmissionRules.from_config({**config, "WORKER_CONCURRENCY": 0}, server).model_limit(2) is None


def test_a_cap_that_refuses_everything_is_a_config_error():
    with pytest.raises(ConfigError, match="MODEL_QUEUE_LIMIT=0 without WORKER_CONCURRENCY"):
        create_app({"MODEL_QUEUE_LIMIT": 0}, environ={})

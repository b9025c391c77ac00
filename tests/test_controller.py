import pytest
from responses import matchers

from app.upstream import errors
from app.upstream.client import UpstreamClient
from app.upstream.controller import Controller
from app.upstream.errors import UpstreamError
from tests.fakes import CONTROLLER


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def controller(clock):
    return Controller(UpstreamClient(connect_retries=0), CONTROLLER, timeout=(1, 1), model_list_ttl=5,
                      refresh_interval=60, clock=clock)


def test_has_model_uses_the_cached_list_within_the_ttl(controller, cluster, clock):
    listing = cluster.serves("a", "b")
    assert controller.has_model("a")
    clock.now += 4
    assert controller.has_model("b")
    assert listing.call_count == 1


def test_cached_list_expires_after_the_ttl(controller, cluster, clock):
    listing = cluster.serves("a")
    controller.has_model("a")
    clock.now += 6
    controller.has_model("a")
    assert listing.call_count == 2


def test_a_miss_rereads_the_list_once_so_new_models_work_at_once(controller, cluster, upstream):
    upstream.post(f"{CONTROLLER}/list_models", json={"models": ["a"]})
    upstream.post(f"{CONTROLLER}/list_models", json={"models": ["a", "new"]})
    assert controller.has_model("a")
    assert controller.has_model("new")
    assert len(upstream.calls) == 2


def test_unknown_model_is_false_after_one_reread(controller, cluster):
    listing = cluster.serves("a")
    assert not controller.has_model("zzz")
    assert listing.call_count == 1


def test_a_controller_with_no_model_at_all_is_unavailable_not_a_miss(controller, cluster):
    """What a restarted controller lists until the workers' next heartbeats: a retry soon may succeed."""
    cluster.serves()
    with pytest.raises(UpstreamError) as raised:
        controller.has_model("a")
    assert (raised.value.kind, raised.value.upstream) == (errors.UNAVAILABLE, "controller")


def test_listing_refreshes_workers_at_most_once_per_interval(controller, cluster, upstream, clock):
    refresh = upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    listing = cluster.serves("b", "a")
    assert controller.list_models() == ["a", "b"]
    clock.now += 30
    controller.list_models()
    assert (refresh.call_count, listing.call_count) == (1, 2)
    clock.now += 31
    controller.list_models()
    assert refresh.call_count == 2


def test_a_failed_refresh_does_not_fail_the_listing(controller, cluster, upstream):
    upstream.post(f"{CONTROLLER}/refresh_all_workers", status=500)
    cluster.serves("a")
    assert controller.list_models() == ["a"]


def test_worker_address(controller, cluster):
    cluster.routes("m", to="http://w1:21002/")
    assert controller.get_worker_address("m") == "http://w1:21002"


def test_empty_address_means_no_worker(controller, cluster):
    cluster.routes("m", to="")
    with pytest.raises(UpstreamError) as raised:
        controller.get_worker_address("m")
    assert raised.value.kind == errors.UNAVAILABLE


@pytest.mark.parametrize("reply", [{"models": "a"}, {"models": [1]}, ["a"], {}])
def test_invalid_model_list_is_a_bad_response(controller, upstream, reply):
    upstream.post(f"{CONTROLLER}/list_models", json=reply)
    with pytest.raises(UpstreamError) as raised:
        controller.has_model("a")
    assert raised.value.kind == errors.BAD_RESPONSE


@pytest.fixture
def picking(clock):
    """A controller that caches worker picks: asks at most every 0.1 s, keeps a named worker for 5 s."""
    return Controller(UpstreamClient(connect_retries=0), CONTROLLER, timeout=(1, 1), model_list_ttl=5,
                      refresh_interval=60, pick_interval=0.1, pick_ttl=5, clock=clock)


def test_a_pick_is_reused_within_the_pick_interval(picking, cluster, clock):
    asks = cluster.routes_in_turn("http://w1", "http://w2")
    assert [picking.get_worker_address("m") for _ in range(3)] == ["http://w1"] * 3
    clock.now += 0.1
    assert picking.get_worker_address("m") == "http://w2"  # the controller's own pick when it is asked
    assert len(asks) == 2


def test_requests_between_picks_rotate_over_the_workers_named_within_the_ttl(picking, cluster, clock):
    cluster.routes_in_turn("http://w1", "http://w2")
    picking.get_worker_address("m")
    clock.now += 0.2
    picking.get_worker_address("m")
    assert {picking.get_worker_address("m") for _ in range(4)} == {"http://w1", "http://w2"}
    clock.now += 4.9  # w1 was named 5.1 s ago, w2 4.9 s ago; the next ask names w2 again
    assert [picking.get_worker_address("m") for _ in range(3)] == ["http://w2"] * 3


def test_a_worker_that_failed_leaves_the_rotation_at_once(picking, cluster, upstream, clock):
    asks = cluster.routes_in_turn("http://w1", "http://w2", "http://w3")
    upstream.post(f"{CONTROLLER}/refresh_all_workers", json=None)
    picking.get_worker_address("m")
    clock.now += 0.2
    picking.get_worker_address("m")
    picking.report_failure("http://w1")
    assert {picking.get_worker_address("m") for _ in range(4)} == {"http://w2"}
    picking.report_failure("http://w2")
    assert picking.get_worker_address("m") == "http://w3"  # nothing left to reuse: the controller is asked
    assert len(asks) == 3


def test_no_worker_from_the_controller_drops_the_cached_picks(picking, cluster, clock):
    cluster.routes_in_turn("http://w1", "")
    picking.get_worker_address("m")
    clock.now += 0.2
    with pytest.raises(UpstreamError):
        picking.get_worker_address("m")
    with pytest.raises(UpstreamError) as raised:  # not w1: the controller said the model has no worker
        picking.get_worker_address("m")
    assert raised.value.kind == errors.UNAVAILABLE


def test_picks_are_cached_per_model(picking, upstream):
    upstream.post(f"{CONTROLLER}/get_worker_address", json={"address": "http://w1"},
                  match=[matchers.json_params_matcher({"model": "a"})])
    upstream.post(f"{CONTROLLER}/get_worker_address", json={"address": "http://w2"},
                  match=[matchers.json_params_matcher({"model": "b"})])
    assert [picking.get_worker_address(m) for m in ("a", "b", "a", "b")] == ["http://w1", "http://w2"] * 2
    assert len(upstream.calls) == 2


def test_a_pick_interval_of_zero_asks_every_time(controller, cluster):
    asks = cluster.routes_in_turn("http://w1")
    for _ in range(3):
        controller.get_worker_address("m")
    assert len(asks) == 3


def test_is_multimodal_reads_the_controllers_multimodal_list_and_caches_it(controller, cluster, clock):
    listing = cluster.multimodal("llava", "qwen-vl")
    assert controller.is_multimodal("llava")
    clock.now += 4
    assert controller.is_multimodal("qwen-vl")
    assert listing.call_count == 1
    clock.now += 2
    assert controller.is_multimodal("llava")
    assert listing.call_count == 2  # expired after the model-list TTL


def test_a_model_missing_from_the_multimodal_list_rereads_it_once(controller, upstream):
    upstream.post(f"{CONTROLLER}/list_multimodal_models", json={"models": ["llava"]})
    upstream.post(f"{CONTROLLER}/list_multimodal_models", json={"models": ["llava", "new-vl"]})
    assert controller.is_multimodal("llava")
    assert controller.is_multimodal("new-vl")
    assert len(upstream.calls) == 2


def test_a_text_model_is_not_multimodal_after_one_read(controller, cluster):
    listing = cluster.multimodal("llava")
    assert not controller.is_multimodal("vicuna")
    assert listing.call_count == 1


@pytest.mark.parametrize("reply", [{"models": "llava"}, {"nope": []}, [], {"models": [1]}])
def test_an_invalid_multimodal_list_is_a_bad_response(controller, upstream, reply):
    upstream.post(f"{CONTROLLER}/list_multimodal_models", json=reply)
    with pytest.raises(UpstreamError) as caught:
        controller.is_multimodal("llava")
    assert caught.value.kind == errors.BAD_RESPONSE

import pytest

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

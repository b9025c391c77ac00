import pytest
import responses

from app import create_app
from tests.fakes import CONTROLLER, FakeCluster

BASE_CONFIG = {
    "CONTROLLER_ADDRESS": CONTROLLER,
    "API_KEYS": (),
    "UPSTREAM_CONNECT_RETRIES": 0,
}


@pytest.fixture
def config():
    """Per-test settings; tests may change entries before `app` is built."""
    return dict(BASE_CONFIG)


@pytest.fixture
def app(config):
    # environ={} so the developer's or CI's environment cannot change what a test sees.
    return create_app(config, environ={})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def upstream():
    """Every upstream call must be registered, and every registered reply must be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def cluster(upstream):
    return FakeCluster(upstream)

from pathlib import Path

import pytest
import responses

from app import create_app
from tests.fakes import CONTROLLER, FakeCluster

_REAL_PROCESS_TIERS = tuple(Path(__file__).resolve().parent / tier for tier in ("e2e", "interop", "reliability"))


def pytest_collection_modifyitems(config, items):
    """Mark every test of the tiers that start real processes with ``e2e``."""
    for item in items:
        if any(tier in Path(str(item.fspath)).resolve().parents for tier in _REAL_PROCESS_TIERS):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A directory for the logs of every process this session starts."""
    return tmp_path_factory.mktemp("run")


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

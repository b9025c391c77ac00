"""Controller and StaticWorkers are interchangeable behind the WorkerSource protocol the serving layer types against."""
import inspect

import pytest

from app.upstream.controller import Controller
from app.upstream.static_workers import StaticWorkers
from app.upstream.worker_source import WorkerSource

METHODS = [name for name, value in vars(WorkerSource).items() if inspect.isfunction(value) and name[0] != "_"]


def test_the_protocol_names_what_serving_calls():
    assert sorted(METHODS) == ["get_worker_address", "has_model", "is_multimodal", "list_models", "ready",
                              "report_failure"]


@pytest.mark.parametrize("source", [Controller, StaticWorkers])
@pytest.mark.parametrize("method", METHODS)
def test_each_source_has_every_method_with_the_same_parameters(source, method):
    expected = list(inspect.signature(getattr(WorkerSource, method)).parameters)
    assert list(inspect.signature(getattr(source, method)).parameters) == expected


def test_the_app_builds_a_worker_source_in_both_modes(config):
    from app import create_app

    for environ in ({}, {"WORKER_ADDRESSES": "http://w1.test"}):
        assert isinstance(create_app(config, environ=environ).extensions["cluster"].controller, WorkerSource)

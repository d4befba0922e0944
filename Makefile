# The everyday targets. `make demo` and `make test` work on a fresh machine: each creates
# .venv and installs what it needs through constraints.txt, which pins torch==2.13.0 and
# its nvidia-* packages exactly: PyPI serves the CUDA build (several GB; it runs on the
# CPU), and anything unpinned would pull another.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRACE ?= traces/nasa_ksc_jul1995_1min.csv
OUT ?= out

.PHONY: install demo test lint unit bench constraints clean prometheus controlplane

$(STAMP): pyproject.toml constraints.txt
	@# A venv left without pip (python3-venv missing, or an interrupted ensurepip) is
	@# made again, never trusted.
	$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# The main job on the bundled real trace: replay NASA July 1995 through forescale (the
# operator's own plan()), the HPA target sweep and the oracle, under benchmark protocol v1.
demo: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/forescale backtest --trace $(TRACE) --policy all \
		--plot $(OUT)/nasa-backtest.png --report $(OUT)/nasa-backtest.html \
		--out $(OUT)/nasa-backtest.json
	@echo "wrote $(OUT)/nasa-backtest.png, $(OUT)/nasa-backtest.html and $(OUT)/nasa-backtest.json"

lint: $(STAMP)
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# The integration tests start a real Prometheus (Debian's package) on 127.0.0.1.
prometheus:
	bash scripts/install-prometheus.sh

# The integration tests run against a real etcd, kube-apiserver and kube-controller-manager,
# and the chart's end-to-end test uses the real helm and kubectl: all built from source
# (Go module proxy, pinned) into ~/.cache/forescale/controlplane. The first run on a
# machine compiles them (see docs/testing.md for the times); later runs find them cached.
controlplane:
	bash scripts/controlplane/build.sh

test: lint prometheus controlplane
	FORESCALE_REQUIRE_CONTROLPLANE=1 $(BIN)/pytest

# Figures for benchmarks/results/ (slow: minutes each; not part of make test).
bench: $(STAMP)
	$(PY) benchmarks/bench_sizing.py
	$(PY) benchmarks/bench_plan.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/accuracy.py

# The operator image, built here without a Docker engine: buildah builds operator/Dockerfile
# from a Debian base made with mmdebstrap, podman runs it (scripts/image/, docs/release.md).
# mmdebstrap, buildah, podman, runc and skopeo are installed with apt-get when missing.
.PHONY: image image-test release
image: $(STAMP)
	bash scripts/image/build.sh

# The image tier (tests/image): the image run with podman as the chart runs it. Not part of
# `make test` (a cold image build takes minutes and GBs of torch); CI runs it after.
image-test: $(STAMP) prometheus image
	FORESCALE_IMAGE_TESTS=1 $(BIN)/pytest tests/image

# dist/: the packaged chart, the image as an OCI archive, its SBOM and SHA256SUMS, checked.
release: $(STAMP) image
	bash scripts/image/release.sh
	FORESCALE_RELEASE_TESTS=1 $(BIN)/pytest tests/image/test_release.py

# Regenerate the pins after changing dependencies: install the changed one into .venv by
# hand first (pip install -c constraints.txt would refuse a dependency raised past its pin),
# then freeze what is installed (review the diff: torch must stay 2.13.0). The pins are
# written beside and moved into place only when pip freeze succeeded: a failure never
# empties them.
constraints:
	@test -x $(PY) || { echo "no $(VENV): make install first" >&2; exit 2; }
	$(PY) -m pip freeze --exclude-editable --exclude forescale > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache

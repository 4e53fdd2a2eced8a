# Each target sets up its own virtual environment, so both work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first and pinned: pip takes the CPU wheel on this machine's disk, not a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The bf16-marked tests compare scores with fp32 references; the second pass runs them with auto
# taking the bf16 path (emulated on CPUs without it), so the suite holds on every kind of CPU.
test: lint
	@start=$$(date +%s) && \
	$(PY) -m pytest -q && \
	TUNESMITH_ASSUME_NATIVE_BF16=1 $(PY) -m pytest -q -m bf16 && \
	echo "make test: both pytest passes took $$(( $$(date +%s) - start )) s"

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Each target sets up its own virtual environment, so both work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean docs

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	# torch first, through constraints.txt's pin: pip takes the CPU wheel on this machine's disk,
	# not a CUDA build (pyproject.toml states only the range the library supports).
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
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

# The guide in docs/ as a static site in site/ (no web fonts or CDNs: it builds and reads offline).
# First the config reference is regenerated from the config's field comments, and every relative
# link is checked, anchors too (mkdocs cannot see the links to ../benchmarks/ outside docs/).
# NO_MKDOCS_2_WARNING silences mkdocs-material's end-of-life banner, printed on every build.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) scripts/config_reference.py
	$(PY) -m pytest -q tests/test_docs.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

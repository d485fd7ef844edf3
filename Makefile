# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.textmill-installed
DEMO_DIR ?= demo_data
DEMO_OUT ?= out/demo

.PHONY: demo test install clean

install: $(STAMP)

# torch first, pinned to the CPU build these machines carry; then the project and dev tools.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/curate demo-corpus $(DEMO_DIR)
	$(VENV)/bin/curate run corpus_specs/demo.yaml --out $(DEMO_OUT) --workers 2

test: $(STAMP)
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DIR)

# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.textmill-installed
DEMO_DIR ?= demo_data
DEMO_OUT ?= out/demo
DEMO_RUN ?= runs/demo

.PHONY: demo test install clean

install: $(STAMP)

# torch first, pinned to the CPU build these machines carry; then the project and dev tools.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Curate the demo corpus (a rerun skips finished stages), then train a small GPT on its
# shards with TP = 2 and PP = 2 (4 processes) from scratch, then score it zero-shot on the
# shipped cloze task the corpus was decontaminated against.
demo: $(STAMP)
	$(VENV)/bin/curate demo-corpus $(DEMO_DIR)
	$(VENV)/bin/curate run corpus_specs/demo.yaml --out $(DEMO_OUT) --workers 2
	@if [ -e $(DEMO_RUN) ]; then echo "make demo: removing $(DEMO_RUN) (the previous demo training run) to train from scratch"; fi
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/pretrain tiny --tp 2 --pp 2 --set data.curated=$(DEMO_OUT) \
		--set train.dir=$(DEMO_RUN) --set train.steps=200 --set train.eval_every=20 \
		--set train.save_every=100 --set train.log_every=20
	$(VENV)/bin/pretrain eval $(DEMO_RUN) --tasks pydoc_cloze --shots 0 --out $(DEMO_RUN)/eval
	@echo
	@echo "report:       $(DEMO_OUT)/report.html (and report.md)"
	@echo "curated data: $(DEMO_OUT)/curated/   ledger: $(DEMO_OUT)/ledger/"
	@echo "token shards: $(DEMO_OUT)/tokens/"
	@echo "checkpoint:   $(DEMO_RUN)/checkpoints/   metrics: $(DEMO_RUN)/metrics.jsonl"
	@echo "evaluation:   $(DEMO_RUN)/eval/report.md (zero-shot pydoc_cloze, lm-eval)"
	@echo "tensorboard:  $(VENV)/bin/tensorboard --logdir $(DEMO_RUN)/tb"

test: $(STAMP)
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DIR) $(DEMO_RUN)

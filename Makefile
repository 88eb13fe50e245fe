# `make study` and `make test` do all their own set-up: a venv in .venv, installed from pyproject.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test figures clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

study: $(STAMP)
	$(BIN)/l1jax study --out out/study

test: $(STAMP)
	$(BIN)/python -m pytest tests

figures: $(STAMP)
	$(BIN)/python scripts/make_figures.py

clean:
	rm -rf $(VENV) out

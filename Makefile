# Two commands do all set-up on a fresh machine (see README): `make train` and `make test`.
# Each creates .venv if missing and installs the project into it only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The shared JPEG copy of CIFAR-10 when it is beside the checkout; otherwise cifar_fast falls back to
# $$CIFAR_FAST_DATA and then to fastai's download.
DATA   ?= $(firstword $(wildcard ../shared/data/cifar10.tgz))
DATA_ARG := $(if $(DATA),--data $(DATA),)
RECIPE ?= recipes/quick.py

.PHONY: install train data test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/cifar-fast train $(RECIPE) $(DATA_ARG) $(ARGS)

data: $(STAMP)
	$(BIN)/cifar-fast data $(DATA_ARG)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

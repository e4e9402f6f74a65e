# obcore: two commands for a new user — `make demo` and `make test`.
# Everything installs from PyPI into .venv (override with VENV=...).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-slow lint docs bench synth synth-blocks synth-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot,synth]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/obcore demo

# One pytest worker per CPU; a file's tests stay on one worker, so a cocotb bench's build
# folder has one user (the native model's build cache locks itself).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

docs: $(STAMP)
	$(BIN)/obcore docs

bench: $(STAMP)
	$(BIN)/obcore bench

# Bitstreams and reports (docs/boards.md) for the two boards the project measures, and the
# synthesis tests (the synth extra, amaranth-boards and the yowasp tools, comes with install:
# the default suite places and routes one small block).
synth: $(STAMP)
	$(BIN)/obcore synth --board ulx3s-85f
	$(BIN)/obcore synth --board icebreaker

# Each block alone on the 85F (docs/boards.md, Results): one nextpnr at a time, minutes each.
SYNTH_BLOCKS := signals quoter guard books ingress csr

synth-blocks: $(STAMP)
	for block in $(SYNTH_BLOCKS); do \
		$(BIN)/obcore synth --board ulx3s-85f --block $$block || exit 1; done

synth-test: $(STAMP)
	$(BIN)/python -m pytest -m synth

clean:
	rm -rf build .pytest_cache .ruff_cache

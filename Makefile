# Two commands for a newcomer:  `make demo` (install + run the main job on the embedded examples)
# and `make test` (install + the test suite; what CI runs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The model: $GAPSEEK_MODEL_DIR if set; else ../shared/models/cgcnn when present; else gapseek downloads
# the pinned checkpoint once into ~/.cache/gapseek (verified by sha256).
ifeq ($(origin GAPSEEK_MODEL_DIR), undefined)
  ifneq ($(wildcard ../shared/models/cgcnn/band-gap.pth.tar),)
    export GAPSEEK_MODEL_DIR := $(abspath ../shared/models/cgcnn)
  endif
endif

.PHONY: install demo test bench clean lock
install: $(VENV)/.installed

# Every dependency at the exact version of requirements.lock, then gapseek itself without resolving again.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# Refresh the lock (the one command): resolve pyproject.toml (+ extras test, mpich) and requirements.in anew
# with pip-tools, for CPython 3.11 on Linux x86_64. Review `git diff requirements.lock`, run `make test`,
# and re-measure the README's figures before committing a new lock.
LOCKENV := .lockenv
lock:
	$(PYTHON) -m venv $(LOCKENV)
	$(LOCKENV)/bin/python -m pip install -q "pip-tools==7.6.2"
	$(LOCKENV)/bin/pip-compile --quiet --upgrade --allow-unsafe --strip-extras --extra test --extra mpich \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml requirements.in
	sed -i -E 's/^(torch==[0-9.]+)\+[a-z0-9]+$$/\1/' requirements.lock

# When the model came from ../shared (not from your own $GAPSEEK_MODEL_DIR), it is first installed into the
# user cache (verified by sha256), so that gapseek finds it in your shell too, outside make.
demo: install
ifeq ($(origin GAPSEEK_MODEL_DIR), file)
	$(BIN)/gapseek model fetch --from "$(GAPSEEK_MODEL_DIR)"
endif
	$(BIN)/gapseek demo --out gapseek-demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/featurize_throughput.py

clean:
	rm -rf $(VENV) $(LOCKENV) gapseek-demo .pytest_cache

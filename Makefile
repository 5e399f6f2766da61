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

.PHONY: install demo test bench clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,mpich]"
	touch $@

demo: install
	$(BIN)/gapseek demo --out gapseek-demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/featurize_throughput.py

clean:
	rm -rf $(VENV) gapseek-demo .pytest_cache

# make demo | make test | make bench — each creates .venv and installs on its own.
# make test runs the linters (ruff, mypy) first, then the suite; CI (.ci/run) runs make test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[export,dev,examples]'
	touch $(STAMP)

demo: $(STAMP)
	cd examples/simplenet && ../../$(PY) train.py && ../../$(VENV)/bin/edgeship export simplenet_state.pt \
		--arch model.py:SimpleNet --input x:1x10 --dynamic-batch -o simplenet.edgeship

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results.md

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeship tests benchmarks examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info examples/simplenet/*.pt examples/simplenet/*.edgeship

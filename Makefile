# make demo | make test | make test-slow | make bench | make floors | make cross-check — each creates .venv and installs on its own.
# make test runs the linters (ruff, mypy) first, then the suite; CI (.ci/run) runs make test, make floors
# and make cross-check: bundles exported here, checked by the project's wheel in an emulated arm64
# Debian root (qemu-user; needs root; the root, qemu and wheels are cached in ~/.cache/edgeship/cross-arm64).
# PYTHON=python3.10 (3.10 to 3.13) picks the interpreter; a different one than .venv was built
# with rebuilds .venv from scratch (the stamp names the interpreter's version), never a mixed venv.
# torch is the CPU build from TORCH_INDEX: constraints.txt pins torch==X+cpu (Linux, Windows), so
# where that index is unreachable the install stops instead of pulling PyPI's multi-GB CUDA build.
# TORCH_BUILD=pypi is the explicit opt-in to PyPI's own torch (the CUDA build on Linux) instead.
PYTHON ?= python3
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_BUILD ?= cpu
VENV := .venv
PY := $(VENV)/bin/python
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
STAMP := $(VENV)/.installed-py$(PYVER)-torch-$(TORCH_BUILD)
# the CPU index is added only where it answers: pip retries an unreachable index for every package
# (minutes), while a machine that already has the CPU wheel (find-links, a cache) needs no index
PIP_CPU = $(shell $(PYTHON) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' $(TORCH_INDEX) >/dev/null 2>&1 && echo --extra-index-url $(TORCH_INDEX))

.PHONY: demo test test-slow bench lint floors cross-check clean web-deps

$(STAMP): pyproject.toml constraints.txt
	@test "$(PYVER)" != none || { echo "make: $(PYTHON) not found; pass PYTHON=python3.X (3.10 to 3.13)"; exit 2; }
	@case "$(TORCH_BUILD)" in cpu|pypi) ;; *) echo "make: TORCH_BUILD=$(TORCH_BUILD): use cpu or pypi"; exit 2;; esac
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	sed $(if $(filter pypi,$(TORCH_BUILD)),'s/+cpu;/;/',-n 'p') constraints.txt > $(VENV)/constraints.txt
	$(PY) -m pip install -q $(if $(filter cpu,$(TORCH_BUILD)),$(PIP_CPU)) -c $(VENV)/constraints.txt \
		-e '.[export,dev,docs,examples,openvino,web,text,hf,genai]' || { \
		echo "make: install failed. torch's CPU build comes from $(TORCH_INDEX) (TORCH_INDEX=...): check that pip"; \
		echo "can reach it for Python $(PYVER); PyPI's own torch is the multi-GB CUDA build, never installed silently"; \
		echo "(TORCH_BUILD=pypi installs it on purpose)."; \
		rm -rf $(VENV); exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	cd examples/simplenet && ../../$(PY) train.py && ../../$(VENV)/bin/edgeship export simplenet_state.pt \
		--arch model.py:SimpleNet --input x:1x10 --dynamic-batch -o simplenet.edgeship

# the suite without the `slow` end-to-end tests (about 100, 3 minutes), which `make test-slow` runs
# and CI runs after it (.ci/run): make test stays under 10 minutes on 2 cores
test: $(STAMP) lint web-deps
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP) web-deps
	$(PY) -m pytest -q -m slow

# the web target's tests (tests/test_web.py, marker `web`): Playwright comes with the venv (the `web`
# extra); Chromium from the system's packages where it can (as root with apt-get; quietly skipped
# otherwise, and those tests skip); onnxruntime-web fetched with npm into ~/.cache/edgeship/web once
web-deps: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
			&& { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
				|| { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } \
		|| echo "make: no Chromium here (apt-get install chromium as root); the web tests will skip"
	@$(VENV)/bin/edgeship web-runtime --fetch || echo "make: onnxruntime-web not fetched; the web tests will skip"

bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results.md

lint: $(STAMP)
	$(VENV)/bin/ruff check edgeship tests benchmarks examples
	$(VENV)/bin/mypy
	d=$$(mktemp -d) && { $(VENV)/bin/mkdocs build --strict --site-dir $$d; rc=$$?; rm -rf $$d; exit $$rc; }

# the lowest supported versions (constraints-floors.txt) in their own venv: the quick subset
floors:
	PYTHON=$(PYTHON) TORCH_INDEX=$(TORCH_INDEX) .ci/floors

# arm64 without the hardware: `edgeship check` of bundles exported here (int8 ones included) in an
# arm64 Debian root under qemu-user, with the runtime dependencies only (.ci/cross-check; as root)
cross-check: $(STAMP)
	VENV=$(VENV) .ci/cross-check

# the JavaScript loader (js/): its node packages exactly as js/package-lock.json pins them (npm ci
# writes node_modules/.package-lock.json), then its tests (tsc on its types, node --test; they export
# their bundles with .venv); skipped with a message where node or npm is missing. `make test` runs
# them first; tests/test_js_web.py (pytest) runs examples/web/ in headless Chromium with these packages.
.PHONY: js-test
test: js-test

# npm gives up on an unreachable registry after 30 s and one retry (its default: minutes), and a failed
# npm ci (offline) skips the loader's tests with a message, as web-deps does; a failing test still fails
NPM_CI := npm ci --prefix js --no-audit --no-fund --fetch-timeout=30000 --fetch-retries=1
js/node_modules/.package-lock.json: js/package-lock.json js/package.json
	$(NPM_CI)

js-test: $(STAMP)
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		if $(MAKE) --no-print-directory js/node_modules/.package-lock.json; then npm test --prefix js; \
		else rm -rf js/node_modules; \
			echo "make: npm ci --prefix js failed (is the npm registry reachable?): skipping the JavaScript loader's tests"; fi; \
	else echo "make: node/npm not found: skipping the JavaScript loader's tests (js/; node >= 20)"; fi

clean:
	rm -rf $(VENV) .venv-floors build dist *.egg-info examples/simplenet/*.pt examples/simplenet/*.edgeship js/node_modules

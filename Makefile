# `make demo` and `make test` set up whatever is missing, then run.
# Set-up: Debian's libmemkind0 (when root and missing), a virtualenv in .venv
# with torch 2.13.0 (CPU build), and torch-tier with its C++ extension.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
EXT_SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.h') setup.py pyproject.toml

.PHONY: setup demo test test-all test-sanitizers bench clean memkind

setup: memkind $(VENV)/.built

memkind:
	@if ldconfig -p 2>/dev/null | grep -q 'libmemkind\.so\.0'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing libmemkind0 with apt-get"; \
		(apt-get install -y -qq libmemkind0 >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq libmemkind0 >/dev/null)) || \
		echo "warning: could not install libmemkind0; memkind tiers and their tests will be skipped"; \
	else \
		echo "warning: libmemkind0 is missing and cannot be installed here (needs root and apt-get);"; \
		echo "         the memkind tiers and their tests will be skipped, the 'sim' tier works without it"; \
	fi

# Dependencies live once, in pyproject.toml: its build requirements (read with
# tomllib), then the package with its dev and models extras. torch is pinned
# first so that no looser requirement pulls a (multi-GB, CUDA) newer build.
$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install $$($(PY) -c "import tomllib; \
		print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'])")
	$(PIP) install --no-build-isolation -e '.[dev,models]'
	touch $@

$(VENV)/.built: $(VENV)/.deps $(EXT_SOURCES)
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

demo: setup
	$(PY) examples/quickstart.py

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ''

# The allocator's stress test under AddressSanitizer, then ThreadSanitizer, each on an
# instrumented copy of the extension built in a temporary directory (README: Building with
# sanitizers). Not part of `test`: see there for why.
test-sanitizers: setup
	PYTHON=$(PY) tests/sanitizers/run.sh address
	PYTHON=$(PY) tests/sanitizers/run.sh thread

bench: setup
	$(PY) benchmarks/overhead.py

clean:
	rm -rf build *.egg-info torch_tier/_C*.so torch_tier/_planner*.so $(VENV)

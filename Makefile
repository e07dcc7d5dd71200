# myomap: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export TCP_NODELAY := 1

# Where `make run` listens and keeps its data, and the demo's console (a storescp on loopback that the node sends
# the demo's results to); each can be overridden: `make run NODE_PORT=11114 WEB_PORT=8081 DATA_DIR=/tmp/myomap`
# with the same variables for `make demo`.
NODE_PORT ?= 11112
WEB_PORT ?= 8080
DATA_DIR ?= data
DEMO_DIR ?= $(DATA_DIR)/demo
DEMO_AE ?= DEMO
DEMO_PORT ?= 11113
# The demo console as the node's [[peers]] entry: results of what DEMO sends go back to it (routing.return_outputs).
# An MYOMAP_PEERS of your own (same JSON form) replaces it; add this entry to it to keep the demo's console.
MYOMAP_PEERS ?= [{"ae_title": "$(DEMO_AE)", "host": "127.0.0.1", "port": $(DEMO_PORT)}]

# The node needs only the [cpu] extra; the tests and training get theirs in the same virtualenv, each with its
# own stamp so that `make run` never installs torch or pytest.
NODE_STAMP := $(VENV)/.installed-node
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test deps venv lint demo bench clean

$(NODE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[cpu]'
	touch $@

$(TEST_STAMP): $(NODE_STAMP)
	$(PIP) install -q -e '.[cpu,dev,train]'
	touch $@

venv: $(NODE_STAMP)

## Debian packages the integration tests drive (DCMTK, dicom3tools, Orthanc, PostgreSQL, Redis, Chromium,
## poppler-utils for the PDF reports' pages) and pango, which WeasyPrint draws the PDF reports with.
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for b in storescu dciodvfy Orthanc redis-server chromium pdftoppm; do command -v $$b >/dev/null || missing=1; done; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	  for lib in libpango-1.0-0 libpangoft2-1.0-0; do dpkg -s $$lib >/dev/null 2>&1 || missing=1; done; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      dcmtk dicom3tools orthanc postgresql redis-server chromium poppler-utils libpango-1.0-0 \
	      libpangoft2-1.0-0 >/dev/null; \
	  fi; \
	fi

run: $(NODE_STAMP)
	MYOMAP_DICOM__PORT=$(NODE_PORT) MYOMAP_WEB__PORT=$(WEB_PORT) MYOMAP_STORAGE__PATH=$(DATA_DIR) \
	  MYOMAP_PEERS='$(MYOMAP_PEERS)' $(VENV)/bin/myomap serve

test: deps $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## Sends a synthetic study to a node started with `make run` (in another terminal) as a scanner would, with a
## storescp on 127.0.0.1:$(DEMO_PORT) as the scanner's console: three slices, MOLLI, ShMOLLI and T2-prep; seed 20
## moves the heart across the border in the apical MOLLI and ShMOLLI and the mid T2-prep series, by more than the
## motion checks' operating points need (seed 7, the earlier demo, moved it too little for motion model 1.1.0).
## Waits for the results and prints what the console received next to the phantom's truth.
DEMO_SEED ?= 20
DEMO_TIMEOUT_S ?= 600

demo: $(NODE_STAMP)
	@echoscu -aet $(DEMO_AE) -aec MYOMAP 127.0.0.1 $(NODE_PORT) >/dev/null 2>&1 || \
	  { echo "No node answers on 127.0.0.1:$(NODE_PORT): start it with 'make run' first."; exit 1; }
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/myomap phantom --out $(DEMO_DIR) --studies 1 --seed $(DEMO_SEED) --sequence all --slices 3 \
	  --motion-rate 0.5
	MYOMAP_STORAGE__PATH=$(DATA_DIR) $(PY) -m dicomnode.app.demo --studies $(DEMO_DIR) --port $(NODE_PORT) \
	  --console-ae $(DEMO_AE) --console-port $(DEMO_PORT) --web http://127.0.0.1:$(WEB_PORT) \
	  --timeout-s $(DEMO_TIMEOUT_S)

bench: $(TEST_STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# myomap: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export TCP_NODELAY := 1

.PHONY: run test deps venv lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[cpu,dev]'
	touch $@

venv: $(VENV)/.installed

## Debian packages the integration tests drive (DCMTK, dicom3tools, Orthanc, PostgreSQL, Redis, Chromium).
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for b in storescu dciodvfy Orthanc redis-server chromium; do command -v $$b >/dev/null || missing=1; done; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=1; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      dcmtk dicom3tools orthanc postgresql redis-server chromium >/dev/null; \
	  fi; \
	fi

run: venv
	$(VENV)/bin/myomap serve

test: deps venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

## Sends a synthetic study to a node started with `make run` (in another terminal).
demo: venv
	$(VENV)/bin/myomap phantom --out data/demo --studies 1 --seed 7 --sequence all
	storescu -aet DEMO -aec MYOMAP +sd +r +sp '*.dcm' 127.0.0.1 11112 data/demo
	@echo "Sent. Studies, series and results: http://127.0.0.1:8080"

bench: venv
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

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
	$(PIP) install -q -e '.[cpu,dev,train]'
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
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## Sends a synthetic study to a node started with `make run` (in another terminal): three slices, MOLLI, ShMOLLI
## and T2-prep, seed 7 with breathing motion in the mid ShMOLLI and T2-prep series; prints where to look.
DEMO_DIR := data/demo
DEMO_WEB := http://127.0.0.1:8080

define DEMO_SUMMARY
import json, pathlib
print("Sent. Studies, series and results: $(DEMO_WEB)")
first = pathlib.Path("data/initial_admin_password")
if first.exists():
  print(f"Log in as admin with the password in {first} (written at the node's first start; change it with"
        " 'myomap user passwd admin', add your own user with 'myomap user add NAME').")
else:
  print("Log in with a user of 'myomap user list' ('myomap user add NAME' adds one).")
print("The analysed (raw) series, each with its result on its page:")
for manifest in sorted(pathlib.Path("$(DEMO_DIR)").glob("study_*/manifest.json")):
  for level in json.loads(manifest.read_text())["slices"]:
    for sequence in json.loads((manifest.parent / level["sidecar"]).read_text())["sequences"]:
        raw = sequence["series"]["magnitude"]
        moved = sorted((s for s, m in sequence["motion"]["labels"].items() if m), key=int)
        note = f"  <- breathing motion, segments {', '.join(moved)}" if moved else ""
        print(f"  {raw['series_description']:<22} $(DEMO_WEB)/series/{raw['series_instance_uid']}{note}")
endef
export DEMO_SUMMARY

demo: venv
	@echoscu -aet DEMO -aec MYOMAP 127.0.0.1 11112 || { echo "No node answers on 127.0.0.1:11112: start 'make run' first."; exit 1; }
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/myomap phantom --out $(DEMO_DIR) --studies 1 --seed 7 --sequence all --slices 3 --motion-rate 0.5
	storescu -aet DEMO -aec MYOMAP +sd +r +sp '*.dcm' 127.0.0.1 11112 $(DEMO_DIR)
	@$(PY) -c "$$DEMO_SUMMARY"

bench: venv
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

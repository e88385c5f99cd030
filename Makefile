# fish-platform: `make demo` runs the whole graph and starts the service; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON_311 := $(shell command -v python3.11 2>/dev/null || (python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3))

export FISH_DATA_DIR ?= $(CURDIR)/fish-data
export DAGSTER_HOME ?= $(FISH_DATA_DIR)/dagster_home
export FISH_RAW_URI ?= $(FISH_DATA_DIR)/raw
export FISH_SERVE_PORT ?= 3000
export PYSPARK_PYTHON ?= $(CURDIR)/$(BIN)/python

.PHONY: demo test serve dagster mlflow system-deps frontend lint benchmarks images deploy print-urls clean

$(BIN)/.installed: pyproject.toml
	@if [ -z "$(PYTHON_311)" ]; then echo "missing prerequisite: Python 3.11 (python3.11 not found; install it, e.g. apt-get install python3.11 python3.11-venv)" >&2; exit 1; fi
	$(PYTHON_311) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

system-deps:
	@./.ci/system-deps.sh

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	@command -v npm >/dev/null || { echo "missing prerequisite: npm (apt-get install npm)" >&2; exit 1; }
	npm ci --prefix frontend --no-audit --no-fund --loglevel=error
	@touch $@

frontend: frontend/node_modules/.installed

demo: system-deps $(BIN)/.installed frontend
	@mkdir -p $(DAGSTER_HOME)
	@if [ ! -d "$(FISH_RAW_URI)" ] && [[ "$(FISH_RAW_URI)" != s3://* ]]; then \
	  $(BIN)/fish-platform sample-data $(FISH_RAW_URI) --species 5 --per-species 60 --corrupt 3 --duplicates 3; fi
	$(BIN)/dagster job execute -m fish_platform.definitions -j fish_pipeline
	$(MAKE) serve

serve: $(BIN)/.installed frontend
	$(BIN)/bentoml serve serving.service:FishService --port $(FISH_SERVE_PORT)

dagster: $(BIN)/.installed
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -m fish_platform.definitions

# The MLflow UI on the embedded store the demo writes (backend and artifact root from the settings);
# Dagster metadata links runs to it (FISH_MLFLOW_UI_URL, default http://127.0.0.1:5000).
MLFLOW_PORT ?= 5000
mlflow: $(BIN)/.installed
	@eval "$$($(BIN)/python -c 'import shlex; from fish_platform.resources import artifact_location_for as a; from fish_platform.settings import load_settings; s = load_settings(); print("STORE=" + shlex.quote(s.mlflow_tracking_uri), "ARTIFACTS=" + shlex.quote(a(s) or ""))')"; \
	if [[ "$$STORE" == http* ]]; then echo "MLflow runs as a server: open $$STORE"; exit 0; fi; \
	echo "MLflow UI on $$STORE: http://127.0.0.1:$(MLFLOW_PORT)"; \
	exec $(BIN)/mlflow ui --backend-store-uri "$$STORE" --default-artifact-root "$$ARTIFACTS" \
	  --host 127.0.0.1 --port $(MLFLOW_PORT)

test: system-deps $(BIN)/.installed frontend
	$(BIN)/ruff check fish_platform serving fish_platform_tests benchmarks
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check fish_platform serving fish_platform_tests benchmarks

benchmarks: $(BIN)/.installed
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/serving.py

FISH_OVERLAY ?= local

# Build and push the serving, Dagster and MLflow images (docker buildx or podman) under the
# commit's tag to FISH_IMAGE_REGISTRY (default: localhost:5001 locally, the Terraform registry on yandex).
images:
	FISH_OVERLAY=$(FISH_OVERLAY) scripts/images.sh

deploy:
	k8s/deploy.sh $(FISH_OVERLAY)

print-urls:
	k8s/print-urls.sh $(FISH_OVERLAY)

clean:
	rm -rf fish-data test-output

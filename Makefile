# The README's two commands: `make demo` and `make test`. Both set up `.venv` first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo test unit lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) chromium

# The Prefect console's browser test drives Debian's chromium through Playwright (executable_path); Playwright's
# own browser download (`playwright install`) is never used. Installed when missing and we are root.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "note: /usr/bin/chromium is missing, so the Prefect UI browser test will be skipped;" \
		     "install it with: sudo apt-get install chromium"; \
	fi

demo: setup
	$(BIN)/python -m deployments.demo

# The lint and type gate first (seconds), then every test.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

unit: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# ruff and mypy as configured in pyproject.toml (mypy's file list is there too).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info

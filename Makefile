# Quick start: `make demo` trains CUT on the built-in default; `make test` runs the test suite.
# Both set up .venv first (scripts/bootstrap.sh), so each works on a fresh machine.
.PHONY: setup demo test test-all lint bench
setup:
	@bash scripts/bootstrap.sh
demo: setup
	.venv/bin/cutalign demo
test: setup
	.venv/bin/python -m pytest -q
test-all: setup
	.venv/bin/python -m pytest -q -m "slow or not slow"
lint: setup
	.venv/bin/ruff check src tests benchmarks
bench: setup
	.venv/bin/python benchmarks/cut_step.py

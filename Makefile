# Single entry point. Both targets bootstrap .venv on first use.
.PHONY: demo test lint venv bench

venv:
	@bash scripts/bootstrap.sh

demo: venv
	@.venv/bin/python -m rftflow.demo

lint: venv
	@.venv/bin/ruff check .

test: venv lint
	@.venv/bin/python -m pytest -q

bench: venv
	@for f in benchmarks/*.py; do echo "== $$f"; .venv/bin/python $$f || exit 1; done

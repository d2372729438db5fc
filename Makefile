# Single entry point. Both targets bootstrap .venv on first use.
.PHONY: demo test lint venv bench

venv:
	@bash scripts/bootstrap.sh

demo: venv
	@.venv/bin/python -m rftflow.cli.demo

lint: venv
	@.venv/bin/ruff check .

test: venv lint
	@.venv/bin/python -m pytest -q

bench: venv
	@# bench_gpu.py exits 2 on a machine without CUDA (it says so): not a failure of the others
	@for f in benchmarks/*.py; do echo "== $$f"; .venv/bin/python $$f; rc=$$?; \
	  if [ $$rc -ne 0 ] && ! { [ $$rc -eq 2 ] && [ $$f = benchmarks/bench_gpu.py ]; }; then exit 1; fi; done

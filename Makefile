.PHONY: setup example test lint bench

setup:
	bash scripts/setup.sh

example:
	bash scripts/example.sh

test:
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check prefect_aml tests examples benchmarks

bench: setup
	.venv/bin/python benchmarks/run_all.py

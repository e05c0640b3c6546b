# The commands a person runs. `make test` is the test command CI runs (.ci/run).
.PHONY: install test lint typecheck pytest demo reliability bench clean

MYPY_TARGETS := base utils config connectors web sandbox watchers $(wildcard scheduler.py cli.py)

install:
	@bash scripts/bootstrap.sh

lint: install
	.venv/bin/ruff check .

typecheck: install
	.venv/bin/mypy $(MYPY_TARGETS)

pytest: install
	bash scripts/with-redis.sh .venv/bin/python -m pytest $(PYTEST_ARGS)

test: install lint typecheck pytest

# The fault-injection, hostile-input and secret-leak suite in full (20 SIGKILL rounds of a 1,000-document
# sync per source, longer hypothesis runs); `make test` runs the same tests reduced.
reliability: install
	KMRL_RELIABILITY_FULL=1 bash scripts/with-redis.sh .venv/bin/python -m pytest -m "reliability or slow" $(PYTEST_ARGS)

# Every benchmark in bench/, then BENCHMARKS.md rewritten with each figure beside its target.
bench: install
	bash scripts/with-redis.sh .venv/bin/python -m bench.run_all $(BENCH_ARGS)

# The demo reports how long installing took, then runs by itself for under two minutes.
demo:
	@start=$$(date +%s); bash scripts/bootstrap.sh; \
	bash scripts/with-redis.sh .venv/bin/python -m sandbox.demo --install-seconds $$(( $$(date +%s) - start ))

clean:
	rm -rf var logs .pytest_cache .mypy_cache .ruff_cache

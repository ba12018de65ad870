# The two commands: `make run` and `make test`. Everything else is a helper.
.PHONY: run test setup lint format

setup:
	@bin/setup

run: setup
	@bin/run

# Tests use DATABASE_URL / REDIS_URL when set, SQLite and the embedded Redis otherwise.
test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check --quiet .
	.venv/bin/mypy .
	bin/warm-test-cache
	BINDERY_REDIS_PREFIX=test-$$$$ .venv/bin/pytest $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

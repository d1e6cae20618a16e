# Entry points of the repository. `make test` is the test command of README.md and CI.
.PHONY: install test test-fast

# Test worker processes (pytest-xdist); each file's tests run in one worker, so module
# fixtures (a recipe run shared by a file's tests) are built once. 0 runs serially.
TEST_WORKERS ?= 2

install:
	$(MAKE) -s -C tools

test: install
	tools/venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The fast loop: everything but the tests marked `recipe` (recipe scripts, and tools run
# in several processes end to end); under 3 minutes on 2 cores.
test-fast: install
	tools/venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not recipe"

# Entry points of the repository. `make test` is the test command of README.md and CI.
.PHONY: install test

install:
	$(MAKE) -s -C tools

test: install
	tools/venv/bin/python -m pytest

# make demo | make test | make bench | make clean
# Every target but clean first runs scripts/setup.sh (fast when all is in place).

PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	scripts/setup.sh

demo: setup
	.venv/bin/aioxdp demo

test: setup
	$(PY) -m pytest -q

# every bench/*.py with its defaults, one after the other (they share 2 cores)
bench: setup
	@set -e; for script in bench/*.py; do \
		echo "== $$script"; $(PY) "$$script"; \
	done

clean:
	rm -rf build *.egg-info aioxdp/bpf/*.o aioxdp/_xsk/_xsk*.so \
		.pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

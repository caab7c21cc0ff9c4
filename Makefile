# make demo | make test | make bench | make clean
# Every target but clean first runs scripts/setup.sh (fast when all is in place).

PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/aioxdp demo

test: setup
	$(PY) -m pytest -q

# the benchmark programs, one after the other with their defaults (they share
# the 2 cores); results land in bench/results/. BENCHES=... picks others.
BENCHES ?= bench/core_segments.py bench/xsk_rate.py bench/http_bench.py \
	bench/ddos_bench.py bench/workers_bench.py

bench: setup
	$(PY) -m pip install -q --no-build-isolation -e '.[bench]'  # matplotlib for the plots
	@set -e; for script in $(BENCHES); do \
		echo "== $$script"; $(PY) "$$script"; \
	done

clean:
	rm -rf build *.egg-info aioxdp/bpf/*.o aioxdp/_xsk/_xsk*.so \
		.pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

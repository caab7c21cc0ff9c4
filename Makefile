# make demo | make test | make bench | make clean
# Every target but clean first runs scripts/setup.sh (fast when all is in place).

PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/aioxdp demo

# the whole suite on the compiled TCP core, then the sans-IO tests on the pure one;
# AIOXDP_EXPECT_CORE makes a build that silently fell back fail (tests/tcp/test_core_build.py)
test: setup
	AIOXDP_EXPECT_CORE=compiled $(PY) -m pytest -q
	AIOXDP_PURE=1 AIOXDP_EXPECT_CORE=pure $(PY) -m pytest -q tests/tcp

# the benchmark programs, one after the other with their defaults (they share
# the 2 cores); results land in bench/results/. BENCHES=... picks others.
BENCHES ?= bench/core_segments.py bench/xsk_rate.py bench/http_bench.py \
	bench/bulk_bench.py bench/ddos_bench.py bench/workers_bench.py \
	bench/cpu_bench.py bench/poll_bench.py bench/floor_bench.py

bench: setup
	$(PY) -m pip install -q --no-build-isolation -e '.[bench]'  # matplotlib for the plots
	@set -e; for script in $(BENCHES); do \
		echo "== $$script"; $(PY) "$$script"; \
	done

clean:
	rm -rf build *.egg-info aioxdp/bpf/*.o aioxdp/_xsk/_xsk*.so aioxdp/tcp/_compiled.stamp \
		.pytest_cache .ruff_cache .mypy_cache .hypothesis
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
	find aioxdp/tcp -name '*.so' -delete

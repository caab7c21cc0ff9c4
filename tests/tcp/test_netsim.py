"""Bulk transfers both ways over a seeded lossy, duplicating, reordering link.

Each case is reproducible from its seed (see ``netsim.py``); a failure
message carries the seed, the step, both connections' state and the last
segments on the link. Both initial sequence numbers sit just below 2**32,
so both byte streams wrap around during every transfer.
"""

from __future__ import annotations

import random

import pytest

from aioxdp.tcp.config import TcpConfig
from aioxdp.tcp.connection import State

from .netsim import LinkConfig, Simulation

MB = 1_000_000
LOSS_RATES = [0.0, 0.01, 0.05, 0.10]
ALGORITHMS = ["newreno", "cubic"]


def transfer(size: int, *, seed: int, link: LinkConfig,
             config: TcpConfig | None = None) -> Simulation:
    rng = random.Random(seed)
    sim = Simulation(seed=seed, link=link, data_ab=rng.randbytes(size), data_ba=rng.randbytes(size),
                     config=config, iss_client=(1 << 32) - 5000, iss_server=(1 << 32) - 700_000)
    sim.run()  # raises SimulationError unless both streams arrive intact (SHA-256) and close
    for ep in (sim.client, sim.server):
        assert ep.closed == [None]
        assert ep.conn.state in (State.TIME_WAIT, State.CLOSED, State.LAST_ACK, State.CLOSING)
    return sim


def impaired(loss: float) -> LinkConfig:
    return LinkConfig(loss=loss, duplicate=0.01, reorder=0.02)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("loss", LOSS_RATES)
def test_transfer_1mb(loss: float, algorithm: str) -> None:
    sim = transfer(MB, seed=1000 + int(loss * 100), link=impaired(loss),
                   config=TcpConfig(congestion=algorithm))
    if loss:
        assert sim.stats["lost"] > 0  # the link really did drop segments


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("loss", LOSS_RATES)
def test_transfer_10mb(loss: float, algorithm: str) -> None:
    transfer(10 * MB, seed=2000 + int(loss * 100), link=impaired(loss),
             config=TcpConfig(congestion=algorithm))


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_transfer_with_segmentation_offload(loss: float) -> None:
    # The core hands over up to 64 KB at a time (config.gso_max), cut into MSS-sized
    # segments on the way out: recovery, windows and the byte streams stay right.
    sim = transfer(MB, seed=3000 + int(loss * 100), link=impaired(loss),
                   config=TcpConfig(gso_max=65536))
    assert sim.stats["gso_segments"] > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_heavy_reordering(seed: int) -> None:
    # A fifth of the segments overtaken: spurious fast retransmits must not corrupt the stream.
    link = LinkConfig(loss=0.01, duplicate=0.05, reorder=0.2, reorder_delay=0.03)
    transfer(300_000, seed=seed, link=link)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_without_sack_and_timestamps(algorithm: str) -> None:
    # Plain NewReno recovery (RFC 6582) and Karn-only RTT sampling.
    config = TcpConfig(congestion=algorithm, sack=False, timestamps=False)
    transfer(500_000, seed=7, link=impaired(0.05), config=config)


def test_small_receive_buffer() -> None:
    # A window of a few segments: flow control, not congestion, limits the sender.
    config = TcpConfig(rcv_buf=8 * 1024, window_scaling=False)
    transfer(300_000, seed=8, link=impaired(0.02), config=config)


def test_same_seed_same_run() -> None:
    runs = [transfer(200_000, seed=42, link=impaired(0.05)) for _ in range(2)]
    assert runs[0].stats == runs[1].stats
    assert runs[0].now == runs[1].now
    assert list(runs[0].trace) == list(runs[1].trace)


@pytest.mark.parametrize("seed", [1, 2])
def test_slow_reader_closes_the_window(seed: int) -> None:
    # Readers stop for up to a second after 5% of deliveries: the 32 KB receive window
    # fills and closes (or nearly: a window smaller than a segment), the sender probes
    # it (persist timer) or retransmits into it, and resumes on the window update.
    rng = random.Random(seed)
    sim = Simulation(seed=seed, link=impaired(0.02), data_ab=rng.randbytes(MB),
                     data_ba=rng.randbytes(MB // 4), read_pauses=0.05, pause_time=1.0,
                     config=TcpConfig(rcv_buf=32 * 1024))
    sim.run()
    assert sim.stats["read_pauses"] > 0
    assert sim.stats["zero_windows"] > 0  # the window really closed


def test_through_the_wire_codec() -> None:
    # Every segment built into an Ethernet frame and parsed back (aioxdp.tcp.wire):
    # the round trip must not change a field, and the transfer must still succeed.
    rng = random.Random(9)
    sim = Simulation(seed=9, link=impaired(0.05), data_ab=rng.randbytes(300_000),
                     data_ba=rng.randbytes(300_000), through_wire=True)
    sim.run()
    assert sim.stats["lost"] > 0

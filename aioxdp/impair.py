"""Random loss and duplication on a veth, for tests: netem's job, done in BPF.

This kernel has no sch_netem (MACHINE-NOTES.md), so ``bpf/impair.bpf.c`` — a
tc program on a clsact qdisc — draws a random number per packet and drops or
clones it. ``Impairment`` attaches it with the ``tc`` command inside the
device's namespace, sets the rates, and removes it again on exit::

    with Impairment(topo, topo.client_if, loss=0.05) as link:
        ...  # traffic from the client loses about 5% of its packets
        link.counters()  # Counters(seen=..., dropped=..., duplicated=...)

Where to attach: on the *Linux peer's* device. aioxdp's own frames bypass
tc there — AF_XDP transmits straight to the driver, past tc egress, and XDP
takes received frames before tc ingress — so ``client_if`` egress impairs
what reaches aioxdp, ``client_if`` ingress what leaves it. A dropped packet
vanishes as on a wire: the local sender is told it was sent (TC_ACT_STOLEN,
see the BPF source), and kernel TCP sends one segment per draw while an
egress impairment is attached (``_segment_before_tc``).

How the rates get in: ``tc`` loads the object and creates its maps; the maps
are then found through the program (tc's filter listing gives the program
id, ``bpftool prog show`` its map ids, ``bpftool map show`` their names) and
written by id with ``bpftool map update``. That works in every namespace
(BPF ids are global), needs no bpffs mount (``ip netns exec`` hides it), and
two impairments never share a map, unlike maps pinned by name. Until the
write lands (a few milliseconds after attaching) packets pass untouched and
uncounted.
"""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from aioxdp.topology import Topology

OBJECT = Path(__file__).resolve().parent / "bpf" / "impair.bpf.o"

# struct impair_config in bpf/impair.bpf.c: loss, duplicate (u64, fractions
# of 2^32), protocol, flags (u32)
_CONFIG = struct.Struct("<QQII")
_F_ACTIVE, _F_INGRESS = 1, 2
_ZERO_KEY = ("hex", "00", "00", "00", "00")

# tc filter priorities of our own, far from tc's automatic ones (49152 down),
# one per Impairment so two on one device can be told apart
_prefs = itertools.count(20000)


@dataclass(frozen=True)
class Counters:
    """Totals since attaching, in the order of enum impair_counter."""

    seen: int  # packets the rates applied to (those of ``protocol``, if set)
    dropped: int
    duplicated: int


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _bpftool_json(*args: str) -> object:
    return json.loads(_run("bpftool", "-j", *args).stdout)


def _threshold(probability: float) -> int:
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability {probability} is not in [0, 1]")
    return round(probability * (1 << 32))


class Impairment:
    """Drop (and optionally duplicate) packets crossing ``dev`` in one direction.

    ``topology_or_ns`` is a ``Topology`` (the namespace is the one holding
    ``dev``) or a namespace name. ``loss`` and ``duplicate`` are probabilities
    per packet; duplication applies to the packets not dropped. ``protocol``
    (an IP protocol number such as ``socket.IPPROTO_TCP``) limits both to that
    protocol and lets everything else through — ARP, neighbour discovery and
    ping keep working while TCP suffers.
    """

    def __init__(
        self,
        topology_or_ns: Topology | str,
        dev: str,
        *,
        loss: float = 0.01,
        duplicate: float = 0.0,
        direction: Literal["egress", "ingress"] = "egress",
        protocol: int = 0,
    ) -> None:
        if direction not in ("egress", "ingress"):
            raise ValueError(f"direction must be 'egress' or 'ingress', not {direction!r}")
        if isinstance(topology_or_ns, Topology):
            namespaces = {topology_or_ns.server_if: topology_or_ns.server_ns,
                          topology_or_ns.client_if: topology_or_ns.client_ns}
            if dev not in namespaces:
                raise ValueError(f"{dev} is not a device of this topology")
            self.ns = namespaces[dev]
        else:
            self.ns = topology_or_ns
        self.dev = dev
        self.direction = direction
        self.protocol = protocol
        self._rates = (_threshold(loss), _threshold(duplicate))
        self._pref = str(next(_prefs))
        self._created_qdisc = False
        self._gso_max_segs: int | None = None  # the device's own, while we hold it at 1
        self._config_map = self._counters_map = ""

    def _in_ns(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", self.ns, *cmd, check=check)

    def _tc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._in_ns("tc", *args, check=check)

    def _set_gso_max_segs(self, segs: int, check: bool = True) -> None:
        self._in_ns("ip", "link", "set", "dev", self.dev, "gso_max_segs", str(segs), check=check)

    def _segment_before_tc(self) -> None:
        """One draw per segment, not per batch.

        Kernel TCP always builds GSO skbs of up to 64 KiB, whatever the
        device's offloads, and cuts them into segments after tc egress has
        seen them: one draw would drop (or clone) a burst. With the device's
        gso_max_segs at 1, TCP sockets that pick their route while it is
        (connections made inside the ``with``) send one segment per skb.
        Ingress has no such switch: a kernel peer's GSO skb crosses a veth
        whole, so impair that peer's egress instead.
        """
        link = json.loads(self._in_ns("ip", "-d", "-j", "link", "show", "dev", self.dev).stdout)
        self._gso_max_segs = link[0]["gso_max_segs"]
        self._set_gso_max_segs(1)

    def __enter__(self) -> Impairment:
        if not OBJECT.exists():
            raise FileNotFoundError(
                f"{OBJECT} is missing: build it with `pip install -e . --no-build-isolation`"
            )
        # clsact may be there already (another Impairment on this device)
        self._created_qdisc = self._tc("qdisc", "add", "dev", self.dev, "clsact",
                                       check=False).returncode == 0
        try:
            if self.direction == "egress":
                self._segment_before_tc()
            self._tc("filter", "add", "dev", self.dev, self.direction, "pref", self._pref,
                     "bpf", "direct-action", "obj", str(OBJECT), "sec", "tc")
            self._find_maps()
            self._write_config()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # check=False: the namespace may be gone already, taking everything along
        self._tc("filter", "del", "dev", self.dev, self.direction, "pref", self._pref,
                 check=False)
        if self._created_qdisc and not any(
            self._tc("filter", "show", "dev", self.dev, d, check=False).stdout.strip()
            for d in ("ingress", "egress")
        ):
            self._tc("qdisc", "del", "dev", self.dev, "clsact", check=False)
        if self._gso_max_segs is not None:
            # (a second Impairment still attached at this egress loses its
            # per-segment draws: nest two on one device)
            self._set_gso_max_segs(self._gso_max_segs, check=False)

    def _find_maps(self) -> None:
        filters = json.loads(self._tc("-j", "filter", "show", "dev", self.dev, self.direction,
                                      "pref", self._pref).stdout)
        prog_id = next(f["options"]["prog"]["id"] for f in filters if "options" in f)
        prog = _bpftool_json("prog", "show", "id", str(prog_id))
        assert isinstance(prog, dict)
        for map_id in prog["map_ids"]:
            info = _bpftool_json("map", "show", "id", str(map_id))
            assert isinstance(info, dict)
            if info["name"] == "impair_config":
                self._config_map = str(map_id)
            elif info["name"] == "impair_counters":
                self._counters_map = str(map_id)
        if not (self._config_map and self._counters_map):
            raise RuntimeError(f"program {prog_id} lacks the impair maps: is {OBJECT} stale?")

    def set_rates(self, loss: float, duplicate: float = 0.0) -> None:
        """Change the rates while attached (a transfer can start clean, then lose)."""
        self._rates = (_threshold(loss), _threshold(duplicate))
        self._write_config()

    def _write_config(self) -> None:
        flags = _F_ACTIVE | (_F_INGRESS if self.direction == "ingress" else 0)
        value = _CONFIG.pack(*self._rates, self.protocol, flags)
        _run("bpftool", "map", "update", "id", self._config_map, "key", *_ZERO_KEY,
             "value", "hex", *(f"{b:02x}" for b in value))

    def counters(self) -> Counters:
        entries = _bpftool_json("map", "dump", "id", self._counters_map)
        assert isinstance(entries, list)
        values = {
            int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little"):
            int.from_bytes(bytes(int(b, 16) for b in e["value"]), "little")
            for e in entries
        }
        return Counters(*(values[i] for i in range(len(fields(Counters)))))

"""Bad input and missing privileges end in one line that says what to do (issue #13, 3-9).

Exit status 2 for a usage error (argparse's), 1 for a run-time failure. Each case
runs the real command: ``python -m aioxdp`` or a program calling ``aioxdp.install()``,
in a namespace of a fresh Topology where it needs a device, as an unprivileged user
(setpriv) or with capabilities dropped (capsh) where it is about privileges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aioxdp.demo import AppProcess, aioxdp_run, xdp_attached
from aioxdp.topology import Topology

from .test_cli import ROOT, aioxdp, curl_until_answered

USAGE = 2
FAILURE = 1
APP = "examples.hello_aiohttp:app"
# a program that moves onto the stack by environment alone
INSTALL_PROGRAM = """\
import asyncio, aioxdp
aioxdp.install()
async def main():
    await asyncio.get_running_loop().create_server(asyncio.Protocol, "198.18.0.1", 8080)
asyncio.run(main())
"""
NO_UVLOOP = "import sys; sys.modules['uvloop'] = None  # `import uvloop` raises ImportError\n"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def in_ns(topo: Topology, *cmd: str, env: dict[str, str] | None = None,
          ns: str | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIOXDP_")}
    return subprocess.run(["ip", "netns", "exec", ns or topo.server_ns, *cmd],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
                          env={**clean, **(env or {})})


def python_program(tmp_path: Path, source: str) -> str:
    program = tmp_path / "program.py"
    program.write_text(source)
    return str(program)


# -- environment variables (item 5) and a missing uvloop (item 4): usage errors ----------------


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("AIOXDP_QUEUE", "x", "AIOXDP_QUEUE='x': queue must be a whole number (e.g. 0)"),
    ("AIOXDP_PORT_RANGE", "abc-def", "AIOXDP_PORT_RANGE='abc-def': port range must look like "
                                     "LOW-HIGH (e.g. 61000-64999), not 'abc-def'"),
    ("AIOXDP_MODE", "bogus", "AIOXDP_MODE='bogus': mode must be 'skb' or 'native'"),
    ("AIOXDP_POLL", "spin", "AIOXDP_POLL='spin': poll must be 'wakeup', 'busy' or 'adaptive'"),
])
def test_bad_variable_is_named_with_its_form(variable: str, value: str, message: str) -> None:
    result = aioxdp("run", APP, "--interface", "lo", env={variable: value})
    assert result.returncode == USAGE
    assert last_line(result.stderr) == f"aioxdp run: error: {message}"


UVLOOP_MISSING = ("loop 'uvloop' (AIOXDP_LOOP, --loop) needs uvloop, which is not installed: "
                  "pip install 'aioxdp[uvloop]', or use loop 'auto'")


def test_uvloop_asked_for_but_missing_is_one_line() -> None:
    code = NO_UVLOOP + ("from aioxdp import cli\n"
                        f"sys.exit(cli.main(['run', {APP!r}, '--interface', 'lo']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "AIOXDP_LOOP": "uvloop"})
    assert result.returncode == USAGE
    assert last_line(result.stderr) == f"aioxdp run: error: {UVLOOP_MISSING}"
    assert "Traceback" not in result.stderr


def test_uvloop_missing_from_aioxdp_run_leaves_no_unawaited_coroutine() -> None:
    code = NO_UVLOOP + ("import aioxdp\n"
                        "async def main():\n    pass\n"
                        "aioxdp.run(main(), interface='lo', loop='uvloop')\n")
    result = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == FAILURE
    assert last_line(result.stderr) == f"RuntimeError: {UVLOOP_MISSING}"
    assert "never awaited" not in result.stderr


# -- the device: interface (item 7), queue (item 6), address (item 8) ---------------------------


@pytest.mark.netns
def test_unknown_interface_names_the_namespace(topology: Topology, tmp_path: Path) -> None:
    message = f"no interface named 'nosuch0' in network namespace {topology.server_ns} " \
              "(`ip link` lists them)"
    cli = in_ns(topology, sys.executable, "-m", "aioxdp", "run", APP, "--interface", "nosuch0")
    assert cli.returncode == USAGE
    assert last_line(cli.stderr) == f"aioxdp run: error: {message}"
    program = in_ns(topology, sys.executable, python_program(tmp_path, INSTALL_PROGRAM),
                    env={"AIOXDP_INTERFACE": "nosuch0"})
    assert program.returncode == FAILURE
    assert last_line(program.stderr) == f"OSError: [Errno 19] {message}"


@pytest.mark.netns
def test_queue_beyond_the_device_says_how_many_it_has(topology: Topology,
                                                      tmp_path: Path) -> None:
    dev = topology.server_if
    message = f"{dev} has 1 RX queue (0-0; `ethtool -l {dev}`), so there is no queue 7"
    cli = in_ns(topology, sys.executable, "-m", "aioxdp", "run", APP, "--interface", dev,
                "--queue", "7")
    assert cli.returncode == USAGE
    assert last_line(cli.stderr) == f"aioxdp run: error: {message}"
    program = in_ns(topology, sys.executable, python_program(tmp_path, INSTALL_PROGRAM),
                    env={"AIOXDP_INTERFACE": dev, "AIOXDP_QUEUE": "7"})
    assert program.returncode == FAILURE
    assert last_line(program.stderr) == f"OSError: [Errno 22] {message}"
    assert not xdp_attached(topology)


@pytest.mark.netns
def test_interface_without_address_is_warned_about(topology: Topology, tmp_path: Path) -> None:
    dev = topology.server_if
    topology.ip(topology.server_ns, "address", "flush", "dev", dev)
    warning = (f"WARNING aioxdp: {dev} has no IP address, so nothing can reach "
               f"http://0.0.0.0:8080 on the bypass stack: give it one "
               f"(ip address add ADDR/LEN dev {dev}) before starting aioxdp")
    with AppProcess(topology, aioxdp_run(APP, "--interface", dev), cwd=ROOT,
                    log=tmp_path / "app.log") as app:
        for _ in range(120):  # bounded: the app logs it once it serves
            if "serving http://" in app.log.read_text() or not app.alive():
                break
            time.sleep(0.25)
        assert app.stop() == 0, app.log_tail()
    assert warning in app.log.read_text()


# -- privileges (item 3): run-time failures naming the capability or the path -------------------


def _privilege_failure(topology: Topology, *wrapper: str,
                       env: dict[str, str] | None = None) -> str:
    """stderr, one line, of ``aioxdp run`` under ``wrapper``; it must leave no XDP behind."""
    result = in_ns(topology, *wrapper, sys.executable, "-m", "aioxdp", "run", APP,
                   "--interface", topology.server_if, env=env)
    assert result.returncode == FAILURE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not xdp_attached(topology)
    return result.stderr.strip()


NEEDS = ("ERROR aioxdp: aioxdp run on {dev}: a bypass stack on {dev} needs {caps}, which this "
         "process lacks: run as root (or grant them, e.g. setcap or systemd AmbientCapabilities) "
         "(--log-level debug shows the traceback)")


@pytest.mark.netns
def test_unprivileged_user_is_told_the_capabilities(topology: Topology) -> None:
    err = _privilege_failure(topology, "setpriv", "--reuid=nobody", "--regid=nogroup",
                             "--clear-groups")
    assert err.endswith(NEEDS.format(dev=topology.server_if,
                                     caps="CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW"))


@pytest.mark.netns
def test_root_without_cap_bpf_is_told_which_one(topology: Topology) -> None:
    # CAP_SYS_ADMIN would stand in for CAP_BPF: drop both
    err = _privilege_failure(topology, "capsh", "--drop=cap_bpf,cap_sys_admin", "--", "-c",
                             'exec "$0" "$@"')
    assert err.endswith(NEEDS.format(dev=topology.server_if, caps="CAP_BPF"))


@pytest.mark.netns
def test_unwritable_stats_directory_is_named(topology: Topology, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chown(locked, 65534, 65534)  # nobody's, 0700: root without CAP_DAC_OVERRIDE stays out
    locked.chmod(0o700)
    run_dir = locked / "run"
    err = _privilege_failure(topology, "capsh", "--drop=cap_dac_override,cap_dac_read_search",
                             "--", "-c", 'exec "$0" "$@"', env={"AIOXDP_RUN_DIR": str(run_dir)})
    netns = os.stat(f"/run/netns/{topology.server_ns}").st_ino
    path = run_dir / f"{topology.server_if}-0@{netns}.sock"
    assert err.endswith(f"ERROR aioxdp: aioxdp run on {topology.server_if}: cannot create the "
                        f"stats socket {path} (Permission denied): run as root, or set "
                        "AIOXDP_RUN_DIR to a writable directory, or AIOXDP_STATS=0 "
                        "(--log-level debug shows the traceback)")


# -- aioxdp filter (item 9): every argument checked before anything changes --------------------


@pytest.mark.netns
def test_filter_with_a_bad_prefix_changes_nothing(topology: Topology, tmp_path: Path) -> None:
    dev = topology.server_if

    def filter_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return in_ns(topology, sys.executable, "-m", "aioxdp", "filter", *args,
                     "--interface", dev)

    def rules() -> list[dict[str, object]]:
        listing = filter_cmd("list", "--json")
        assert listing.returncode == 0, listing.stderr
        return list(json.loads(listing.stdout)["rules"])

    cmd = aioxdp_run(APP, "--interface", dev, "--host", topology.server_ip)
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        assert curl_until_answered(topology, app, f"http://{topology.server_ip}:8080/")
        bad = filter_cmd("deny", "198.18.7.0/24", "bogus")
        assert bad.returncode == USAGE
        assert last_line(bad.stderr) == (
            "aioxdp filter deny: error: argument PREFIX: not an IP prefix: 'bogus' "
            "(e.g. 198.18.7.0/24, 2001:2::/64, or one address)")
        assert rules() == []  # 198.18.7.0/24 was not applied either
        host_bits = filter_cmd("allow", "198.18.9.0/24", "198.18.203.1/24")
        assert host_bits.returncode == USAGE
        assert last_line(host_bits.stderr) == (
            "aioxdp filter allow: error: argument PREFIX: invalid prefix 198.18.203.1/24: "
            "host bits set for /24; write 198.18.203.0/24 (the prefix) or 198.18.203.1 "
            "(the address alone)")
        assert rules() == []
        good = filter_cmd("deny", "198.18.7.0/24", "198.18.9.9")
        assert good.returncode == 0, good.stderr
        assert sorted(str(r["prefix"]) for r in rules()) == ["198.18.7.0/24", "198.18.9.9/32"]
        assert app.stop() == 0, app.log_tail()


FILTER_NEEDS = ("aioxdp filter: changing or reading the XDP program of {dev} needs "
                "CAP_SYS_ADMIN (the kernel opens another process's BPF program by id for no "
                "less), which this process lacks: run as root")


@pytest.mark.netns
def test_filter_without_cap_sys_admin_names_it(topology: Topology, tmp_path: Path) -> None:
    """``aioxdp filter`` opens the running server's program by id, which takes
    CAP_SYS_ADMIN (CAP_BPF does not do): without it, one line naming it, exit 1, and
    nothing changed; with CAP_SYS_ADMIN alone (CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF
    dropped) the command works."""
    dev = topology.server_if

    def filter_cmd(*wrapper: str, args: tuple[str, ...] = ("deny", "198.18.7.0/24")
                   ) -> subprocess.CompletedProcess[str]:
        return in_ns(topology, *wrapper, sys.executable, "-m", "aioxdp", "filter", *args,
                     "--interface", dev)

    drop = ("capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$0" "$@"')
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    cmd = aioxdp_run(APP, "--interface", dev, "--host", topology.server_ip)
    with AppProcess(topology, cmd, cwd=ROOT, log=tmp_path / "app.log") as app:
        assert curl_until_answered(topology, app, f"http://{topology.server_ip}:8080/")
        for wrapper in (nobody, drop):
            for args in (("deny", "198.18.7.0/24"), ("list",)):
                result = filter_cmd(*wrapper, args=args)
                assert result.returncode == FAILURE
                assert result.stderr == FILTER_NEEDS.format(dev=dev) + "\n"
        listing = filter_cmd(args=("list", "--json"))
        assert listing.returncode == 0, listing.stderr
        assert json.loads(listing.stdout)["rules"] == []  # nothing was applied
        only_sys_admin = ("capsh", "--drop=cap_net_admin,cap_net_raw,cap_bpf", "--", "-c",
                          'exec "$0" "$@"')
        result = filter_cmd(*only_sys_admin)
        assert result.returncode == 0, result.stderr
        listing = filter_cmd(args=("list", "--json"))
        assert [r["prefix"] for r in json.loads(listing.stdout)["rules"]] == ["198.18.7.0/24"]
        assert app.stop() == 0, app.log_tail()

#!/usr/bin/env bash
# Set up a machine to build, test and demo aioxdp; safe to run again.
#
#   1. Debian packages: the BPF toolchain and libraries the native parts build
#      against, and the tools the tests and benchmarks drive (apt-get update
#      runs only when something is missing);
#   2. .venv, made with the python3 on PATH (3.11 or newer);
#   3. the package installed editable with its test extras, which compiles
#      the cffi module, bpf/*.bpf.c into aioxdp/bpf/, and the TCP core with
#      mypyc (aioxdp/tcp/*.so);
#   4. a rebuild of the native parts whose sources changed since (incremental;
#      the TCP core is recompiled, ~30 s, only when one of its sources changed).
#
# A second run that finds everything in place only does step 4.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang/llvm: BPF programs; libbpf-dev, libxdp-dev: headers and libraries of
# the cffi module; iproute2, ethtool, procps (sysctl): test topologies;
# wrk, curl, iputils-ping, hping3, tcpdump: real peers and probes; bpftool:
# BPF map access (aioxdp/impair.py); openssl: test certificates; libcap2-bin
# (capsh): runs with capabilities dropped (tests/test_bad_input.py)
PACKAGES=(clang llvm libbpf-dev libxdp-dev gcc make iproute2 ethtool procps
          wrk curl iputils-ping tcpdump bpftool hping3 openssl libcap2-bin)
VENV=.venv
# the install step's inputs: a change to any of them reinstalls
STAMP_INPUTS=(pyproject.toml setup.py)

log() { printf 'setup: %s\n' "$*"; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root to install: $*" >&2
        exit 1
    fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    need_root "${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "python3 is $(python3 --version 2>&1); aioxdp needs 3.11 or newer" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $(python3 --version)"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.aioxdp-installed"
want="$(cat "${STAMP_INPUTS[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing aioxdp (editable) with its test extras into $VENV"
    "$PY" -m pip install -q --upgrade pip
    # the build needs these in the venv: without build isolation, pip builds
    # with what is installed, and a second install needs no download
    "$PY" -m pip install -q 'setuptools>=77' wheel 'cffi>=1.16' 'mypy>=1.11'
    "$PY" -m pip install -q --no-build-isolation -e '.[test]'
    echo "$want" > "$stamp"
else
    # C sources may have changed since the install: build_ext redoes only
    # what is older than its sources (setup.py checks the BPF objects)
    "$PY" setup.py -q build_ext --inplace >/dev/null
fi
log "ready: $PY"

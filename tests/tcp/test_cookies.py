"""cookies.py: SipHash-2-4, RFC 6528 ISNs and Linux-format SYN cookies."""

from __future__ import annotations

import struct

import pytest

from aioxdp.tcp import cookies
from aioxdp.tcp.cookies import CookieSecrets, check_cookie, isn, make_cookie, siphash24
from aioxdp.tcp.segment import ACK, SYN, Segment
from aioxdp.tcp.seq import MASK

# The SipHash paper's vectors (reference vectors.h, vectors_sip64): key 00..0f, message
# 00 01 .. (n-1) for n = 0..16, as little-endian 64-bit integers.
SIPHASH_VECTORS = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
    0x3F2ACC7F57C29BDB,
]


@pytest.mark.parametrize("n", range(len(SIPHASH_VECTORS)))
def test_siphash_reference_vectors(n: int) -> None:
    assert siphash24(bytes(range(16)), bytes(range(n))) == SIPHASH_VECTORS[n]


def test_siphash_key_length_checked() -> None:
    with pytest.raises(ValueError):
        siphash24(bytes(15), b"")


def test_flow_hash_input_layout() -> None:
    v4 = cookies.flow_hash_input((bytes([198, 18, 0, 1]), 80), (bytes([198, 18, 0, 2]), 40000),
                                 0x01020304)
    assert len(v4) == 40
    assert v4 == bytes([198, 18, 0, 1]) + bytes(12) + bytes([198, 18, 0, 2]) + bytes(12) + \
        bytes.fromhex("0050" "9c40" "01020304")
    v6 = cookies.flow_hash_input((b"\x20" * 16, 1), (b"\x30" * 16, 2))
    assert v6 == b"\x20" * 16 + b"\x30" * 16 + bytes.fromhex("0001000200000000")


def test_derive_key_separates_purposes_and_secrets() -> None:
    keys = {cookies.derive_key(s, label) for s in (b"a" * 32, b"b" * 32)
            for label in (b"x", b"y")}
    assert len(keys) == 4 and all(len(k) == 16 for k in keys)


# --- ISNs ----------------------------------------------------------------------------------------

KEY = bytes(range(100, 116))
LOCAL = (bytes([198, 18, 0, 1]), 8080)
REMOTE = (bytes([198, 18, 0, 2]), 40000)


def test_isn_is_clock_plus_keyed_hash() -> None:
    base = isn(KEY, LOCAL, REMOTE, now=0.0)
    assert base == cookies.flow_hash32(KEY, LOCAL, REMOTE)
    # RFC 6528: M ticks every 4 microseconds
    assert isn(KEY, LOCAL, REMOTE, now=1.0) == (base + 250_000) & MASK
    assert isn(KEY, LOCAL, REMOTE, now=0.000004) == (base + 1) & MASK
    assert isn(KEY, LOCAL, REMOTE, now=20_000.0) == (base + 5_000_000_000) & MASK  # wraps


def test_isn_depends_on_every_tuple_part_and_the_key() -> None:
    variants = [
        isn(KEY, LOCAL, REMOTE, now=5.0),
        isn(bytes(16), LOCAL, REMOTE, now=5.0),
        isn(KEY, (LOCAL[0], 8081), REMOTE, now=5.0),
        isn(KEY, LOCAL, (REMOTE[0], 40001), now=5.0),
        isn(KEY, (bytes([198, 18, 0, 3]), 8080), REMOTE, now=5.0),
        isn(KEY, LOCAL, (bytes([198, 18, 0, 4]), 40000), now=5.0),
        isn(KEY, REMOTE, LOCAL, now=5.0),  # direction matters
    ]
    assert len(set(variants)) == len(variants)


# --- SYN cookies ----------------------------------------------------------------------------------

CLIENT4, SERVER4 = bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])
CLIENT6 = bytes.fromhex("20010002000000000000000000000002")
SERVER6 = bytes.fromhex("20010002000000000000000000000001")
SECRETS = CookieSecrets(b"table secret, 32 bytes of it....")
NOW = 1_700_000_000.0


def syn(*, v6: bool = False, mss: int | None = 1460, wscale: int | None = 7,
        sack_permitted: bool = True, ts: tuple[int, int] | None = (1000, 0),
        seq: int = 0xFFFFFFF0, sport: int = 40000) -> Segment:
    src, dst = (CLIENT6, SERVER6) if v6 else (CLIENT4, SERVER4)
    return Segment(src, dst, sport, 8080, seq, 0, SYN, 64240, mss=mss, wscale=wscale,
                   sack_permitted=sack_permitted, ts=ts)


def ack_for(s: Segment, cookie: int, tsval: int | None) -> Segment:
    """The peer's third handshake segment answering our cookie SYN-ACK."""
    ts = None if tsval is None else (2000, tsval)
    return Segment(s.src, s.dst, s.sport, s.dport, (s.seq + 1) & MASK, (cookie + 1) & MASK, ACK,
                   502, ts=ts)


def round_trip(s: Segment, *, now: float = NOW, later: float = 0.0,
               secrets: CookieSecrets = SECRETS) -> cookies.CookieInfo | None:
    cookie, tsval = make_cookie(SECRETS, s, now=now)
    return check_cookie(secrets, ack_for(s, cookie, tsval), now=now + later)


@pytest.mark.parametrize(("v6", "mss", "expected"), [
    (False, None, 536), (False, 0, 536), (False, 1299, 536), (False, 1300, 1300),
    (False, 1459, 1440), (False, 1460, 1460), (False, 9000, 1460),
    (True, None, 1220), (True, 1279, 1220), (True, 1280, 1280), (True, 1440, 1440),
    (True, 65535, 1460),
])
def test_mss_recovered_from_table(v6: bool, mss: int | None, expected: int) -> None:
    info = round_trip(syn(v6=v6, mss=mss))
    assert info is not None and info.mss == expected


@pytest.mark.parametrize(("wscale", "sack", "expected_ws"), [
    (7, True, 7), (0, False, 0), (14, True, 14), (15, True, 14), (255, False, 14),
    (None, True, None), (None, False, None),
])
def test_options_recovered_from_tsecr(wscale: int | None, sack: bool,
                                      expected_ws: int | None) -> None:
    info = round_trip(syn(wscale=wscale, sack_permitted=sack))
    assert info == cookies.CookieInfo(1460, expected_ws, sack, False)


def test_ecn_bit_carried() -> None:
    s = syn()
    cookie, tsval = make_cookie(SECRETS, s, now=NOW, ecn=True)
    info = check_cookie(SECRETS, ack_for(s, cookie, tsval), now=NOW)
    assert info is not None and info.ecn


def test_without_timestamps_no_options_survive() -> None:
    s = syn(ts=None)
    cookie, tsval = make_cookie(SECRETS, s, now=NOW)
    assert tsval is None
    assert check_cookie(SECRETS, ack_for(s, cookie, None), now=NOW) == \
        cookies.CookieInfo(1460, None, False, False)


def test_cookie_tsval_is_our_clock_with_option_bits_and_never_ahead() -> None:
    for now in (NOW, NOW + 0.001, NOW + 0.063, 0.0, 0.010, 4294967.295):
        for s in (syn(wscale=14, sack_permitted=True), syn(wscale=None, sack_permitted=False)):
            _, tsval = make_cookie(SECRETS, s, now=now)
            assert tsval is not None
            clock = cookies.ts_clock(now)
            assert 0 <= (clock - tsval) & MASK < 64  # at most 63 ms behind, never ahead
            options = (14 | 0x10) if s.wscale == 14 else 0x0F
            assert tsval & 0x3F == options


def test_cookie_layout_is_linux_syncookies() -> None:
    s = syn(mss=1440)
    cookie, _ = make_cookie(SECRETS, s, now=NOW)
    local, remote = (SERVER4, 8080), (CLIENT4, 40000)
    key_a, key_b = SECRETS.current
    count = int(NOW) >> 6
    rest = (cookie - cookies.flow_hash32(key_a, local, remote) - s.seq) & MASK
    assert rest >> 24 == count & 0xFF
    assert (rest - cookies.flow_hash32(key_b, local, remote, count)) & 0xFFFFFF == 2  # msstab[2]


def test_cookie_expires_after_two_counters() -> None:
    start = 64.0 * 1000  # the start of a counter period
    s = syn()
    assert round_trip(s, now=start, later=63.9) is not None
    assert round_trip(s, now=start, later=64.0) is not None  # the previous counter: still valid
    assert round_trip(s, now=start, later=127.9) is not None
    assert round_trip(s, now=start, later=128.0) is None
    assert round_trip(s, now=start, later=64.0 * 255) is None
    assert round_trip(s, now=start, later=64.0 * 256) is None  # the 8-bit counter wrapped
    assert round_trip(s, now=start, later=-64.0) is None  # from the future


def test_cookie_rejected_for_another_tuple_or_isn() -> None:
    s = syn()
    cookie, tsval = make_cookie(SECRETS, s, now=NOW)
    good = ack_for(s, cookie, tsval)
    assert check_cookie(SECRETS, good, now=NOW) is not None
    for field, value in (("sport", 40001), ("dport", 8081), ("src", bytes([198, 18, 0, 3])),
                         ("dst", bytes([198, 18, 0, 9])), ("seq", good.seq + 0x1000)):
        bad = ack_for(s, cookie, tsval)
        setattr(bad, field, value)
        assert check_cookie(SECRETS, bad, now=NOW) is None, field


def test_tampered_cookie_bits_rejected() -> None:
    s = syn(mss=536)
    cookie, tsval = make_cookie(SECRETS, s, now=NOW)
    for bit in range(2, 32):
        info = check_cookie(SECRETS, ack_for(s, cookie ^ (1 << bit), tsval), now=NOW)
        assert info is None, bit


def test_cookie_plus_a_few_is_another_mss_index_as_in_linux() -> None:
    # Linux's format checks only that the recovered index is in the table: whoever holds a
    # cookie can move it by up to 3 and pick another MSS (no more than a new SYN could)
    s = syn(mss=536)
    cookie, tsval = make_cookie(SECRETS, s, now=NOW)
    for delta, mss in ((1, 1300), (2, 1440), (3, 1460), (4, None), (-1, None)):
        info = check_cookie(SECRETS, ack_for(s, (cookie + delta) & MASK, tsval), now=NOW)
        assert (info and info.mss) == mss


def test_random_guesses_rarely_pass() -> None:
    s = syn()
    accepted = sum(check_cookie(SECRETS, ack_for(s, guess * 2654435761 & MASK, None),
                                now=NOW) is not None for guess in range(2000))
    assert accepted <= 2  # ~ 2000 * (2/256) * (4/2**24): expect 0


def test_rotation_keeps_previous_secret_for_one_rotation() -> None:
    secrets = CookieSecrets(b"first")
    s = syn()
    cookie, tsval = make_cookie(secrets, s, now=NOW)
    ack = ack_for(s, cookie, tsval)
    secrets.rotate(b"second")
    assert check_cookie(secrets, ack, now=NOW) is not None
    new_cookie, _ = make_cookie(secrets, s, now=NOW)
    assert new_cookie != cookie
    assert check_cookie(CookieSecrets(b"first"), ack_for(s, new_cookie, tsval), now=NOW) is None
    secrets.rotate(b"third")
    assert check_cookie(secrets, ack, now=NOW) is None


def test_cookie_isn_wraps_cleanly() -> None:
    for seq in (0, 1, MASK, MASK - 1, 0x80000000):
        assert round_trip(syn(seq=seq)) is not None


def test_cookie_hash_input_is_five_words() -> None:
    # what the BPF side hashes: 40 bytes, so no partial final word besides the length word
    data = cookies.flow_hash_input((SERVER4, 1), (CLIENT4, 2), 3)
    assert struct.calcsize("<5Q") == len(data)


def test_known_answers_for_the_bpf_implementation() -> None:
    # Pinned outputs for the XDP program's C implementation to reproduce (the SipHash
    # vectors above pin the primitive; these pin the input layout and the cookie formula).
    key = bytes(range(16))
    local, remote = (SERVER4, 80), (CLIENT4, 40000)
    assert siphash24(key, cookies.flow_hash_input(local, remote, 0)) == 0x75FB961B0A212A5F
    assert cookies.flow_hash32(key, local, remote, 5) == 0x4E2F60EB
    assert cookies.flow_hash32(key, (SERVER6, 443), (CLIENT6, 50000)) == 0x48A8D4A0
    secrets = CookieSecrets(b"known-answer secret")
    assert [k.hex() for k in secrets.current] == ["ba1cd563a78fd48cbc7c77e899ea40a9",
                                                  "f7a3516da845e9e00c8a59c97f9137b1"]
    s = Segment(CLIENT4, SERVER4, 40000, 80, 0x01020304, 0, SYN, 64240, mss=1460, wscale=7,
                sack_permitted=True, ts=(1000, 0))
    assert make_cookie(secrets, s, now=1_700_000_000.5) == (0x6D3FEC05, 0xCFE569D7)

"""Dropping one RAM block's pages from a QEMU migration stream (the libvirt driver's
clones map that block from the golden's RAM file). The streams here are built record by
record as QEMU 7.2 writes them; the VM tier restores clones from a real one."""

from __future__ import annotations

import io
import struct

import pytest

from antrieb.vm.libvirt.migration_stream import (
    FLAG_CONTINUE,
    FLAG_EOS,
    FLAG_MEM_SIZE,
    FLAG_PAGE,
    FLAG_ZERO,
    PAGE_SIZE,
    StreamFormatError,
    strip_ram_block,
)

HEADER = b"QEVM\x00\x00\x00\x03" + b"\x07\x00\x00\x00\x08pc-q35-7.2"  # magic, configuration
RAM_ID = b"\x00\x00\x00\x02"
DEVICES = b"\x04\x00\x00\x00\x03\x05timer\x00\x00\x00\x00\x00\x00\x00\x02" + bytes(range(40))


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def block_list(blocks: dict[bytes, int]) -> bytes:
    out = u64(sum(blocks.values()) | FLAG_MEM_SIZE)
    for name, size in blocks.items():
        out += bytes([len(name)]) + name + u64(size)
    return out + u64(FLAG_EOS)


def page(addr: int, flags: int, block: bytes | None, fill: int = 0) -> bytes:
    rec = u64(addr | flags | (0 if block else FLAG_CONTINUE))
    if block:
        rec += bytes([len(block)]) + block
    return rec + (bytes([fill]) if flags & FLAG_ZERO else bytes([fill]) * PAGE_SIZE)


def stream(*parts: bytes) -> bytes:
    start = b"\x01" + RAM_ID + b"\x03ram\x00\x00\x00\x00\x00\x00\x00\x04"
    blocks = block_list({b"antrieb-ram": 1 << 20, b"pc.rom": 1 << 16})
    body = b""
    for i, part in enumerate(parts):
        kind = b"\x03" if i == len(parts) - 1 else b"\x02"
        body += kind + RAM_ID + part + u64(FLAG_EOS) + b"\x7e" + RAM_ID
    return HEADER + start + blocks + b"\x7e" + RAM_ID + body + DEVICES


def parse_pages(data: bytes) -> list[tuple[bytes, int, int]]:
    """(block, address, first byte) of every page record left in a stripped stream."""
    found, current, p = [], b"", data.index(b"\x03ram") + 12
    while p < len(data):
        (word,) = struct.unpack_from(">Q", data, p)
        p += 8
        flags = word & (PAGE_SIZE - 1)
        if flags & FLAG_MEM_SIZE:
            remaining = word & ~(PAGE_SIZE - 1)
            while remaining:
                p += 1 + data[p]
                remaining -= struct.unpack_from(">Q", data, p)[0]
                p += 8
            continue
        if flags & FLAG_EOS:
            if data[p] == 0x7E:
                p += 5
            if data[p] not in (2, 3):
                break
            p += 5
            continue
        if not flags & FLAG_CONTINUE:
            current = data[p + 1:p + 1 + data[p]]
            p += 1 + data[p]
        found.append((current, word & ~(PAGE_SIZE - 1), data[p]))
        p += 1 if flags & FLAG_ZERO else PAGE_SIZE
    return found


def strip(data: bytes, block: str = "antrieb-ram") -> tuple[bytes, object]:
    out = io.BytesIO()
    stats = strip_ram_block(io.BytesIO(data), out, block)
    return out.getvalue(), stats


def test_pages_of_the_block_are_dropped_and_the_rest_kept():
    data = stream(
        page(0, FLAG_PAGE, b"antrieb-ram", 1) + page(0x1000, FLAG_ZERO, None)
        + page(0, FLAG_PAGE, b"pc.rom", 7) + page(0x1000, FLAG_PAGE, None, 8),
        page(0x2000, FLAG_PAGE, b"antrieb-ram", 3) + page(0x2000, FLAG_ZERO, b"pc.rom", 9),
    )
    out, stats = strip(data)
    assert parse_pages(out) == [(b"pc.rom", 0, 7), (b"pc.rom", 0x1000, 8),
                                (b"pc.rom", 0x2000, 9)]
    assert (stats.pages_dropped, stats.pages_kept) == (3, 3)
    assert stats.bytes_in == len(data) and stats.bytes_out == len(out)
    assert out.endswith(DEVICES), "device state is copied unchanged"
    assert b"\x0bantrieb-ram" + u64(1 << 20) in out, "the block list still names the block"


def test_a_kept_page_after_a_dropped_one_names_its_block():
    # QEMU marks a page CONTINUE when the previous record was of the same block; with
    # the previous record gone, the kept one must say which block it belongs to.
    data = stream(page(0, FLAG_PAGE, b"pc.rom", 5) + page(0, FLAG_PAGE, b"antrieb-ram", 1)
                  + page(0x1000, FLAG_PAGE, b"pc.rom", 6) + page(0x2000, FLAG_PAGE, None, 7))
    out, _ = strip(data)
    assert parse_pages(out) == [(b"pc.rom", 0, 5), (b"pc.rom", 0x1000, 6),
                                (b"pc.rom", 0x2000, 7)]
    assert out.count(b"\x06pc.rom") == 1 + 3  # block list + every kept record


def test_the_stream_may_start_after_a_libvirt_header():
    data = stream(page(0, FLAG_PAGE, b"antrieb-ram", 1))
    src = io.BytesIO(b"x" * 100 + data)
    src.seek(100)
    out = io.BytesIO()
    stats = strip_ram_block(src, out, "antrieb-ram")
    assert stats.bytes_in == len(data) and stats.pages_dropped == 1


@pytest.mark.parametrize("data, message", [
    (HEADER + DEVICES, "no ram section"),
    (stream(u64(0x400 | FLAG_PAGE) + b"\x03abc"), "unknown ram record flags"),
    (stream(page(0, FLAG_PAGE, None, 1)), "continued ram record"),
    (stream(page(0, FLAG_PAGE, b"pc.rom", 1)), "no pages of ram block"),
    (stream(page(0, FLAG_PAGE, b"antrieb-ram", 1))[:-len(DEVICES) - 200], "ends inside"),
])
def test_an_unexpected_stream_is_refused(data, message):
    # the golden then keeps the whole stream: clones read all RAM, slower but right
    with pytest.raises(StreamFormatError, match=message):
        strip(data)

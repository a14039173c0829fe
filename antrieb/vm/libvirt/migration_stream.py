"""QEMU migration streams without the pages of one RAM block.

libvirt 9 cannot switch on ``x-ignore-shared`` (it sets only the migration capabilities
it knows, and QEMU 7.2 has no property for it), so a libvirt save image carries all guest
RAM, and every clone restored from it reads ~110 MB and faults in fresh huge pages for
them. The libvirt driver's golden keeps its RAM in a file instead (shared mapping), and
its clones map that file copy-on-write, as the qemu driver's clones do. What is left is
to drop that block's pages from the saved stream, which this module does once per golden:
a clone's stream then holds the other RAM blocks (ROMs, ACPI tables) and device state.

Format (QEMU ``migration/savevm.c`` and ``migration/ram.c``, stable since QEMU 2.x): a
header, a configuration section, then the iterative ``ram`` section: START (block list),
PART/END sections of page records, each record a big-endian u64 of address | flags,
the block's name unless CONTINUE, then one fill byte (ZERO) or one page (PAGE); EOS ends
a section's records. Device sections follow and are copied unchanged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

PAGE_SIZE = 4096  # x86 TARGET_PAGE_SIZE
SECTION_START, SECTION_PART, SECTION_END, SECTION_FOOTER = 0x01, 0x02, 0x03, 0x7E
FLAG_ZERO, FLAG_MEM_SIZE, FLAG_PAGE, FLAG_EOS, FLAG_CONTINUE = 0x02, 0x04, 0x08, 0x10, 0x20
FLAG_MASK = PAGE_SIZE - 1
KNOWN_FLAGS = FLAG_ZERO | FLAG_MEM_SIZE | FLAG_PAGE | FLAG_EOS | FLAG_CONTINUE
RAM_START = b"\x03ram\x00\x00\x00\x00\x00\x00\x00\x04"  # idstr, instance 0, version 4
U64 = struct.Struct(">Q")


class StreamFormatError(ValueError):
    """The stream is not laid out as this module expects: use it unchanged."""


@dataclass(frozen=True)
class StripStats:
    pages_dropped: int
    pages_kept: int
    bytes_in: int
    bytes_out: int


def strip_ram_block(src: BinaryIO, dst: BinaryIO, block: str) -> StripStats:
    """Copy a migration stream from ``src`` (positioned at its start) to ``dst`` without
    the pages (data and zero pages) of RAM block ``block``; the block stays in the block
    list, so the destination still checks its size."""
    base = src.tell()
    head = src.read(1 << 16)
    start = head.find(RAM_START)
    if start < 5 or head[start - 5] != SECTION_START:
        raise StreamFormatError("no ram section at the start of the stream")
    section_id = head[start - 4:start]
    src.seek(base + start + len(RAM_START))

    def read(n: int) -> bytes:
        data = src.read(n)
        if len(data) != n:
            raise StreamFormatError("the stream ends inside a ram record")
        return data

    out: list[bytes] = [head[:start + len(RAM_START)]]
    written = len(out[0])
    name = block.encode()
    dropped = kept = 0
    current = b""

    def emit(data: bytes) -> None:
        nonlocal written
        out.append(data)
        written += len(data)
        if len(out) > 256:
            dst.write(b"".join(out))
            out.clear()

    def records() -> None:
        nonlocal dropped, kept, current
        while True:
            raw = read(8)
            (word,) = U64.unpack(raw)
            flags = word & FLAG_MASK
            if flags & ~KNOWN_FLAGS:
                raise StreamFormatError(f"unknown ram record flags {flags:#x}")
            if flags & FLAG_EOS:
                emit(raw)
                return
            if flags & FLAG_MEM_SIZE:
                emit(raw)
                remaining = word & ~FLAG_MASK
                while remaining > 0:
                    idlen = read(1)
                    idstr = read(idlen[0])
                    used = read(8)
                    emit(idlen + idstr + used)
                    remaining -= U64.unpack(used)[0]
                continue
            if not flags & (FLAG_ZERO | FLAG_PAGE):
                raise StreamFormatError(f"ram record without data, flags {flags:#x}")
            if not flags & FLAG_CONTINUE:
                current = read(read(1)[0])
            elif not current:
                raise StreamFormatError("a continued ram record with no block before it")
            body = read(1 if flags & FLAG_ZERO else PAGE_SIZE)
            if current == name:
                dropped += 1
                continue
            # A kept record names its block: the record before it may have been dropped.
            kept += 1
            emit(U64.pack(word & ~FLAG_CONTINUE) + bytes([len(current)]) + current + body)

    records()  # the START section: the block list, then EOS
    while True:
        kind = read(1)
        if kind[0] == SECTION_FOOTER:
            emit(kind + read(4))
            continue
        if kind[0] not in (SECTION_PART, SECTION_END):
            emit(kind)  # the first device section: the rest is copied as it is
            break
        sid = read(4)
        if sid != section_id:
            raise StreamFormatError("another iterative section inside the ram section")
        emit(kind + sid)
        records()
        if kind[0] == SECTION_END:
            break
    dst.write(b"".join(out))
    while chunk := src.read(1 << 20):
        dst.write(chunk)
        written += len(chunk)
    if not dropped:
        raise StreamFormatError(f"no pages of ram block {block!r} in the stream")
    return StripStats(pages_dropped=dropped, pages_kept=kept, bytes_in=src.tell() - base,
                      bytes_out=written)

"""Restoring clones: each from its own save image, fed through a FIFO.

The image is libvirt's save header carrying the clone's XML (see
:mod:`antrieb.vm.libvirt.xml`), then the golden's QEMU stream, sent straight from the
golden's file: nothing is copied to disk per clone. The stream holds device state and
the small RAM blocks; guest RAM is the golden's RAM file, mapped copy-on-write (see
:mod:`antrieb.vm.libvirt.migration_stream`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading

from antrieb.vm.libvirt.xml import clone_save_header, read_save_header

F_SETPIPE_SZ = 1031


def feed_save_image(fifo: str, golden_save: str, xml: str) -> threading.Thread:
    """Write the clone's save image into a FIFO as libvirt reads it: our header, then
    the golden's QEMU stream (sendfile: no copy through Python)."""
    with open(golden_save, "rb") as f:
        head = read_save_header(f.read(1 << 20))
    header = clone_save_header(head, xml)
    os.mkfifo(fifo, 0o600)

    def feed() -> None:
        with contextlib.suppress(OSError), open(golden_save, "rb") as src, \
                open(fifo, "wb", buffering=0) as out:
            with contextlib.suppress(OSError):  # fewer wake-ups of the reading QEMU
                fcntl.fcntl(out.fileno(), F_SETPIPE_SZ, 1 << 20)
            out.write(header)
            offset, end = head.stream_offset, os.fstat(src.fileno()).st_size
            while offset < end:
                sent = os.sendfile(out.fileno(), src.fileno(), offset, end - offset)
                if sent == 0:
                    break
                offset += sent

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def unblock_feeder(fifo: str) -> None:
    """A feeder still waiting for libvirt to open the FIFO would wait forever."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))

"""The managed cache: what lives in ``$ANTRIEB_CACHE``, how much disk it takes, when each
entry was last used, and least-recently-used eviction down to ``ANTRIEB_CACHE_MAX``.

=========  ========================================  ======================================
kind       folder                                    evicted by :func:`prune`
=========  ========================================  ======================================
image      ``images/<recipe>-<hash12>/``             yes: outdated builds first, then LRU
golden     ``golden/<image>[-libvirt]-<key12>/``     yes: outdated snapshots first, then LRU
layer      ``saved/<name>/``, manifest kind "layer"  yes, LRU
saved      ``saved/<name>/``, a node a user saved    never: user data (listed and counted)
apt-cache  ``apt-cache/``                            never (see below)
=========  ========================================  ======================================

``runs/``, ``experiments/`` and ``store.sqlite`` are records, not cache: not listed here.

Entries depend on each other: a golden's disk is a qcow2 overlay on its image's raw disk,
and a saved image's or a layer's disk an overlay on its golden's disk (or a layer's).
So an entry is evicted only once nothing left in the cache needs it (leaves first: the
goldens of an image go before the image), and whatever a saved user image needs is kept.

The apt cache is listed and counted but never evicted: it grows only by new package
versions, it lets runs work while the mirror is away, and deleting it under a running
cluster's proxy would fail that cluster's apt (a vanished file is a 502 to the guest).
Delete ``apt-cache/`` by hand, when no cluster runs, to reclaim it.

Eviction is safe against concurrent use: an entry is skipped while its lock is held (the
flock its builder takes), while a running process holds one of its files open (QEMU
holds its disk chain and RAM file), and for :data:`GRACE_S` after it was last used (the
gap between finding an entry and a VM opening its files). It is renamed away before it
is deleted, so a half-deleted entry never looks valid.

Example::

    from antrieb.vm import cachedir
    [(e.kind, e.name, e.bytes) for e in cachedir.entries()]
    cachedir.prune(dry_run=True)        # what would go to get under ANTRIEB_CACHE_MAX
"""

from antrieb.vm.cachedir.evict import DEFAULT_MAX, auto_prune, max_bytes, parse_size, prune
from antrieb.vm.cachedir.scan import GRACE_S, Entry, entries, lock_path, locked, mark_used

__all__ = ["DEFAULT_MAX", "GRACE_S", "Entry", "auto_prune", "entries", "lock_path", "locked",
           "mark_used", "max_bytes", "parse_size", "prune"]

"""The clusters an MCP server lends to its clients: lifetimes, quotas, teardown.

Every cluster belongs to one client (an owner: the stdio client, or one HTTP session),
lives for ``lifetime`` seconds from when it is ready (``extend`` adds time up to the
maximum lifetime) and is torn down by the reaper thread once it expires, when its owner
goes away (:meth:`ClusterPool.release`) or when the server stops (:meth:`close`).
Limits come from settings (:func:`Limits.from_settings`); going over one raises
:class:`~antrieb.errors.LimitError` naming it. The clusters are kept (``keep=True``), so
``antrieb cluster list|exec|down`` reach them too.

Example::

    pool = ClusterPool(Limits(per_client=2))
    entry = pool.reserve("client-1", [{"name": "web1"}])
    pool.bring_up(entry)              # blocking: Cluster.up()
    pool.down("client-1", entry.id)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from antrieb import config
from antrieb.errors import LimitError, UnknownNameError


def _number(name: str, default: float) -> float:
    raw = config.setting(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        from antrieb.errors import ConfigError

        raise ConfigError(f"ANTRIEB_{name.upper()} must be a number, not {raw!r}") from None
    return value


@dataclass(frozen=True)
class Limits:
    """What the server lends. Settings (environment): ``ANTRIEB_MCP_CLUSTER_LIFETIME``
    (seconds, default 600), ``ANTRIEB_MCP_CLUSTER_MAX_LIFETIME`` (3600),
    ``ANTRIEB_MCP_CLUSTERS_PER_CLIENT`` (2), ``ANTRIEB_MCP_CLUSTERS_TOTAL`` (4),
    ``ANTRIEB_MCP_FILE_MAX_BYTES`` (1 MiB), ``ANTRIEB_MCP_MAX_RUNS`` (2 converge/deploy
    runs at once)."""

    lifetime: float = 600.0
    max_lifetime: float = 3600.0
    per_client: int = 2
    total: int = 4
    file_bytes: int = 1 << 20
    max_runs: int = 2

    @classmethod
    def from_settings(cls) -> Limits:
        d = cls()
        return cls(lifetime=_number("mcp_cluster_lifetime", d.lifetime),
                   max_lifetime=_number("mcp_cluster_max_lifetime", d.max_lifetime),
                   per_client=int(_number("mcp_clusters_per_client", d.per_client)),
                   total=int(_number("mcp_clusters_total", d.total)),
                   file_bytes=int(_number("mcp_file_max_bytes", d.file_bytes)),
                   max_runs=int(_number("mcp_max_runs", d.max_runs)))


@dataclass
class Entry:
    """One lent cluster: its owner and its clock (monotonic seconds)."""

    cluster: Any
    owner: str
    created: float
    lifetime: float
    expires: float = float("inf")  # set when ready; a cluster starting does not expire
    ready: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cluster.id


def _default_factory(nodes: list[dict[str, Any]]) -> Any:
    from antrieb.cluster import Cluster

    return Cluster(nodes=nodes, keep=True)


class ClusterPool:
    def __init__(self, limits: Limits | None = None,
                 factory: Callable[[list[dict[str, Any]]], Any] = _default_factory,
                 clock: Callable[[], float] = time.monotonic, tick: float = 0.5):
        self.limits = limits or Limits.from_settings()
        self.factory, self.clock, self.tick = factory, clock, tick
        self.entries: dict[str, Entry] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.reaped: list[str] = []  # ids torn down by expiry (for the log and tests)

    # -- quotas and ownership -------------------------------------------------------

    def reserve(self, owner: str, nodes: list[dict[str, Any]],
                lifetime: float | None = None) -> Entry:
        """Count a new cluster against the limits and make it (not started yet)."""
        lifetime = self.limits.lifetime if lifetime is None else lifetime
        if not 0 < lifetime <= self.limits.max_lifetime:
            raise LimitError("ANTRIEB_MCP_CLUSTER_MAX_LIFETIME", self.limits.max_lifetime,
                             f"a lifetime of {lifetime:g}s is not in (0, max]")
        with self.lock:
            mine = sorted(e.id for e in self.entries.values() if e.owner == owner)
            if len(mine) >= self.limits.per_client:
                raise LimitError("ANTRIEB_MCP_CLUSTERS_PER_CLIENT", self.limits.per_client,
                                 f"this client has {len(mine)} clusters up ({', '.join(mine)})"
                                 f"; take one down with cluster_down first")
            if len(self.entries) >= self.limits.total:
                raise LimitError("ANTRIEB_MCP_CLUSTERS_TOTAL", self.limits.total,
                                 f"this server has {len(self.entries)} clusters up; wait "
                                 f"for one to go down")
            cluster = self.factory(nodes)  # validates the input: nothing starts yet
            entry = Entry(cluster, owner, self.clock(), lifetime)
            self.entries[entry.id] = entry
        return entry

    def bring_up(self, entry: Entry) -> Entry:
        """Start the cluster (blocking); on failure it is forgotten again."""
        try:
            entry.cluster.up()
        except BaseException:
            with self.lock:
                self.entries.pop(entry.id, None)
            raise
        with self.lock:
            entry.ready, entry.expires = True, self.clock() + entry.lifetime
        self._publish(entry)
        return entry

    def forget(self, entry: Entry) -> None:
        """Stop counting ``entry`` (its caller tears it down)."""
        with self.lock:
            self.entries.pop(entry.id, None)

    def get(self, owner: str, cluster_id: str) -> Entry:
        with self.lock:
            entry = self.entries.get(cluster_id)
            mine = sorted(e.id for e in self.entries.values() if e.owner == owner)
        if entry is None or entry.owner != owner:
            raise UnknownNameError("cluster of this client", cluster_id, mine)
        return entry

    def owned(self, owner: str) -> list[Entry]:
        with self.lock:
            return [e for e in self.entries.values() if e.owner == owner]

    def extend(self, owner: str, cluster_id: str, seconds: float) -> Entry:
        """``seconds`` more life, up to the maximum lifetime from its creation."""
        entry = self.get(owner, cluster_id)
        with self.lock:
            cap = entry.created + self.limits.max_lifetime
            if entry.expires >= cap - 0.5:
                raise LimitError("ANTRIEB_MCP_CLUSTER_MAX_LIFETIME", self.limits.max_lifetime,
                                 f"cluster {cluster_id} already lives as long as it may")
            entry.expires = min(entry.expires + max(seconds, 0.0), cap)
        self._publish(entry)
        return entry

    def remaining(self, entry: Entry) -> float | None:
        return None if not entry.ready else max(0.0, entry.expires - self.clock())

    # -- teardown -------------------------------------------------------------------

    def down(self, owner: str, cluster_id: str) -> float:
        """Tear one cluster down (blocking); its seconds."""
        entry = self.get(owner, cluster_id)
        return self._down([entry])[entry.id]

    def release(self, owner: str) -> list[str]:
        """Tear down everything ``owner`` has (its client or session went away)."""
        entries = self.owned(owner)
        self._down(entries)
        return [e.id for e in entries]

    def close(self) -> None:
        """The server stops: the reaper ends, every cluster goes down."""
        self._stop.set()
        with self.lock:
            entries = list(self.entries.values())
        self._down(entries)

    def _down(self, entries: list[Entry]) -> dict[str, float]:
        with self.lock:
            for e in entries:
                self.entries.pop(e.id, None)
        if not entries:
            return {}
        times: dict[str, float] = {}

        def one(entry: Entry) -> None:
            t0 = time.monotonic()
            entry.cluster.down()  # also kills a start in progress (Cluster.down)
            times[entry.id] = time.monotonic() - t0

        with ThreadPoolExecutor(len(entries)) as pool:
            for fut in [pool.submit(one, e) for e in entries]:
                fut.result()
        return times

    def expired(self) -> list[Entry]:
        now = self.clock()
        with self.lock:
            return [e for e in self.entries.values() if e.ready and e.expires <= now]

    def start(self) -> None:
        """The reaper: tears clusters down as they expire, without any call."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="antrieb-mcp-reaper",
                                            daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while not self._stop.wait(self.tick):
            gone = self.expired()
            if gone:
                self.reaped += [e.id for e in gone]  # before: a watcher sees it down after
                self._down(gone)

    def _publish(self, entry: Entry) -> None:
        if getattr(entry.cluster, "keep", False):
            from antrieb import kept

            kept.update(entry.id, owner=entry.owner, via="mcp",
                        expires_at=time.time() + (self.remaining(entry) or 0.0))

"""Package layers: later attempts start from the golden with the role's packages installed.

The packages a role installs are what an earlier iteration of the run showed: the apt
shim (see :mod:`antrieb.converge.apply`) logs every ``apt-get``/``apt`` command with its
exit status on every node. A layer is made on a clone of the **pristine** golden that
runs nothing but ``apt-get update`` and ``apt-get install -y PACKAGES`` (never a node
that ran the model's script), saved with its memory like :meth:`Cluster.save_node`, and
kept in the cache by (image build, package set), so later runs of the same packages
find it. A role's nodes start from a layer only if the current artifacts still install
exactly those packages (shell: the ``apt install`` lines of the role's script; Ansible:
the packages seen installed on the role's nodes that the playbook still names).

A layer keeps the apt lists its install fetched, as a server where someone installed
those packages would; the script's own ``apt-get update`` then only checks them. The
proof never uses a layer: it starts from the pristine golden (empty lists, no packages).

Anything that stops a layer (the install fails, the driver cannot save a node, the cache
is full) falls back to the pristine golden, said in a :class:`~antrieb.events.LayerChosen`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import threading
import time
from collections.abc import Callable
from typing import Any

from antrieb import events
from antrieb.converge.models import AnsibleArtifacts, ShellArtifacts, Topology
from antrieb.vm import saved

_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$")
_OPTIONS_WITH_VALUE = {"-o", "-c", "-t", "--option", "--config-file", "--target-release",
                       "--default-release"}
_INSTALL_LINE = re.compile(r"\bapt(?:-get)?\b(?P<rest>[^;&|\n]*)")


def packages_in(args: list[str]) -> list[str]:
    """The package names of one ``apt-get ... install ...`` argument list (none if it is
    not an install, or names a file, a version, a release or a variable)."""
    if "install" not in args:
        return []
    out, skip = [], False
    for word in args[args.index("install") + 1:]:
        if skip:
            skip = False
        elif word in _OPTIONS_WITH_VALUE:
            skip = True
        elif word.startswith("-"):
            continue
        elif _PACKAGE.match(word):
            out.append(word)
        else:
            return []  # nginx=1.2*, ./x.deb, $PKGS: not a set we can key a layer by
    return out


def script_packages(script: str) -> set[str]:
    """Every package a shell script's ``apt(-get) install`` commands name."""
    joined = re.sub(r"\\\n", " ", script)
    found: set[str] = set()
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in _INSTALL_LINE.finditer(line):
            try:
                words = shlex.split(m.group("rest"), comments=True)
            except ValueError:
                continue
            found.update(packages_in(words))
    return found


def logged_packages(log: str) -> set[str]:
    """Packages that ``apt-get install`` commands in the shim's log installed (exit 0)."""
    found: set[str] = set()
    for line in log.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "0":
            with contextlib.suppress(ValueError):
                found.update(packages_in(shlex.split(" ".join(parts[2:]))))
    return found


def wanted(topology: Topology, artifacts: ShellArtifacts | AnsibleArtifacts,
           observed: dict[str, set[str]]) -> dict[str, set[str]]:
    """Per role, the package set its nodes could start with (empty: none)."""
    out: dict[str, set[str]] = {}
    for role in topology.roles:
        if isinstance(artifacts, ShellArtifacts):
            out[role] = script_packages(artifacts.scripts.get(role, ""))
        else:
            text = set(re.findall(r"[a-z0-9][a-z0-9+.-]+", artifacts.playbook))
            out[role] = {p for p in observed.get(role, set()) if p in text}
    return out


def layer_name(image: str, packages: set[str]) -> str:
    """The cache name of a layer: the image build (its content hash) and the packages."""
    from antrieb.vm.images import get_recipe

    doc = {"image": image, "build": get_recipe(image).content_hash(),
           "packages": sorted(packages)}
    return "layer-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def build(image: str, packages: set[str], *, timeout: float = 1800.0,
          started: Callable[[Any], None] = lambda cluster: None) -> dict[str, Any]:
    """Make (or find) the layer of ``packages`` on ``image``; its manifest. Raises on a
    failed install or a driver that cannot save a node. ``started(cluster)`` gets the
    builder's cluster before it boots (so another thread can take it down)."""
    from antrieb.cluster import Cluster
    from antrieb.vm import cachedir, saved

    name = layer_name(image, packages)
    # the entry's lock: a second build of it waits (then finds it), a prune leaves it alone
    with cachedir.locked(saved.root() / name):
        if saved.exists(name):
            return saved.load(name)
        t0 = time.monotonic()
        # its own event scope: the builder's cluster is not one of the run's iterations
        cluster = Cluster(nodes=[{"name": "node", "image": image}])
        started(cluster)
        with events.scoped(f"layer:{name}"), cluster:
            node = cluster["node"]
            t1 = time.monotonic()
            r = node.run("export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
                         "apt-get install -y -q " + " ".join(sorted(packages)),
                         timeout=timeout)
            install_s = time.monotonic() - t1
            if r.exit_status != 0:
                raise RuntimeError(f"the install failed ({r.exit_status}): "
                                   f"{(r.stderr or r.stdout)[-400:]}")
            cluster.save_node("node", name)
        manifest = saved.annotate(name, kind="layer", base=image, packages=sorted(packages),
                                  install_s=round(install_s, 2),
                                  build_s=round(time.monotonic() - t0, 2))
    cachedir.auto_prune()
    return manifest


def with_images(topology: Topology, images: dict[str, str]) -> Topology:
    """``topology`` with some nodes' images replaced (layers are not catalogue images, so
    the copy is not validated again)."""
    if not images:
        return topology
    return topology.model_copy(update={"nodes": [
        n.model_copy(update={"image": images.get(n.name, n.image)}) for n in topology.nodes]})


class Layers:
    """The layer choice of one run: what each iteration's nodes start from."""

    def __init__(self, run_id: str, enabled: bool = True) -> None:
        self.run_id = run_id
        self.enabled = enabled
        self.observed: dict[str, set[str]] = {}  # role -> packages an iteration installed
        # layers this run makes in the background: name -> (thread, {"cluster", "error"})
        self._ahead: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}

    def images(self, iteration: int, topology: Topology,
               artifacts: ShellArtifacts | AnsibleArtifacts) -> tuple[dict[str, str], float]:
        """Node name -> image for an attempt, and the seconds it waited for layers."""
        chosen: dict[str, str] = {}
        spent = 0.0
        if not self.enabled:
            return chosen, spent
        for role, packages in wanted(topology, artifacts, self.observed).items():
            nodes = topology.nodes_of(role)
            base = nodes[0].image
            if not packages or any(n.image != base for n in nodes):
                continue
            name, outcome, reason, waited, packages = self._choose(base, role, packages)
            spent += waited
            if name is not None:
                saved.mark_used(name)
                chosen.update({n.name: name for n in nodes})
            self._say(iteration, role, nodes, base, name or base, packages, outcome, reason,
                      waited)
        return chosen, spent

    def _choose(self, base: str, role: str,
                packages: set[str]) -> tuple[str | None, str, str, float, set[str]]:
        """(layer or None, outcome, why, seconds waited, packages) for one role."""
        full = layer_name(base, packages)
        if full not in self._ahead and saved.exists(full):
            return full, "hit", "found in the cache", 0.0, packages
        shown = packages & self.observed.get(role, set())
        if not shown:
            # made alongside this iteration on a clone of its own; used once an iteration
            # has shown that these packages install
            ahead = self._ahead_of_time(base, packages)
            return None, "pristine", ("no layer of these packages yet, and no earlier "
                                      "iteration of this run installed them" +
                                      ("; making one alongside" if ahead else "")), 0.0, packages
        name = layer_name(base, shown)
        if name not in self._ahead and saved.exists(name):
            return name, "hit", "found in the cache", 0.0, shown
        t0 = time.monotonic()
        if name in self._ahead:
            thread, box = self._ahead[name]
            thread.join()
            error = box.get("error")
        else:
            try:
                build(base, shown)
                error = None
            except Exception as exc:  # any failure: the pristine golden, said why
                error = exc
        waited = time.monotonic() - t0
        if error is not None or not saved.exists(name):
            return None, "pristine", (f"the layer could not be made: "
                                      f"{type(error).__name__}: {error}"), waited, shown
        return name, "built", ("made from the pristine golden with what an earlier "
                               "iteration installed"), waited, shown

    def _ahead_of_time(self, base: str, packages: set[str]) -> bool:
        """Start making the layer of ``packages`` in the background (once)."""
        name = layer_name(base, packages)
        if name in self._ahead:
            return True
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                build(base, packages, started=lambda c: box.__setitem__("cluster", c))
            except Exception as exc:  # reported when an iteration wants the layer
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"antrieb-{name}", daemon=True)
        self._ahead[name] = (thread, box)
        thread.start()
        return True

    def close(self) -> None:
        """At the run's end: builds still going are stopped (their half-made layers are
        never listed: a layer exists once its manifest is written)."""
        for thread, box in self._ahead.values():
            cluster = box.get("cluster")
            if thread.is_alive() and cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.down()
            thread.join(timeout=120)

    def observe_cluster(self, cluster: Any, it: Any, earlier: list[Any],
                        layered: bool) -> None:
        """Learn which packages each role of an attempt installed (for later layers); on a
        layered iteration, time the install seconds saved against the last attempt that
        started pristine (both measured in this run)."""
        from antrieb.converge.apply import APT_LOG

        for node in cluster.nodes:
            try:
                log = node.run(f"cat {APT_LOG} 2>/dev/null", timeout=30).stdout
            except Exception:  # a node lost mid-run: nothing learned from it
                continue
            self.observe(node.role, log)
        pristine = [p for p in earlier
                    if p.phase == "attempt" and not p.timings.get("layer_hits")]
        if layered and pristine and "install_s" in pristine[-1].timings:
            it.timings["install_saved_s"] = (pristine[-1].timings["install_s"]
                                             - it.timings.get("install_s", 0.0))

    def finish(self, iterations: list[Any]) -> dict[str, float]:
        """Close, then the run's layer figures: nodes started from a layer, seconds waited
        for layers, install seconds saved."""
        self.close()
        if not self.enabled:
            return {}
        return {k: sum(it.timings.get(k, 0.0) for it in iterations)
                for k in ("layer_hits", "layer_build_s", "install_saved_s")}

    def observe(self, role: str, apt_log: str) -> None:
        """What a node of ``role`` installed in an iteration that started pristine."""
        self.observed.setdefault(role, set()).update(logged_packages(apt_log))

    def _say(self, iteration: int, role: str, nodes: list, base: str, image: str,
             packages: set[str], outcome: str, reason: str, build_s: float = 0.0) -> None:
        events.emit(events.LayerChosen(
            run_id=self.run_id, iteration=iteration, role=role,
            nodes=[n.name for n in nodes], base=base, image=image,
            packages=sorted(packages), outcome=outcome, reason=reason,  # type: ignore[arg-type]
            build_s=round(build_s, 2)))

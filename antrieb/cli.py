"""The ``antrieb`` command. Thin: every command is a call into the public API.

Exit codes: 0 success, 1 the work failed (a VM, a build, a check), 2 bad input
(unknown image, too many nodes...), 3 the host lacks something (see ``antrieb doctor``),
130 interrupted.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from antrieb import events
from antrieb.errors import AntriebError, ConfigError, MissingToolError

app = typer.Typer(help="Run infrastructure code on throw-away clusters of real VMs.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
images_app = typer.Typer(help="Build and list VM images.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(images_app, name="images")
app.add_typer(bench_app, name="bench")
err = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def _print_json(obj: object) -> None:
    """Plain JSON on stdout: no colour, no wrapping, so programs can parse it."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _progress_printer(event: events.Event) -> None:
    """Human progress on stderr, so stdout stays clean for --json."""
    if isinstance(event, events.ImageBuildProgress):
        pct = f" {event.fraction * 100:3.0f}%" if event.fraction is not None else ""
        err.print(f"[dim]image {event.image}:{pct} {event.step} {event.detail}[/dim]")
    elif isinstance(event, events.ImageBuilt):
        how = "cached" if event.cached else f"built in {event.seconds:.0f}s"
        err.print(f"image {event.image} {event.content_hash[:12]} {how}")
    elif isinstance(event, events.GoldenSnapshotReady) and not event.cached:
        err.print(f"golden snapshot of {event.image} made in {event.seconds:.1f}s")
    elif isinstance(event, events.ClusterReady):
        err.print(f"cluster {event.cluster} ready in {event.seconds:.2f}s "
                  f"({event.driver}, {event.accel})")


def _run(fn, *args, **kwargs):
    """Call fn with progress shown; map errors to exit codes and clear messages."""
    unsubscribe = events.subscribe(_progress_printer)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]: everything started was torn down")
        raise typer.Exit(130) from None
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except MissingToolError as exc:
        err.print(f"[red]missing:[/red] {exc}\n(run `antrieb doctor`)")
        raise typer.Exit(3) from None
    except AntriebError as exc:
        err.print(f"[red]failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        unsubscribe()


@images_app.command("build")
def images_build(name: str, force: Annotated[bool, typer.Option(help="Rebuild even if cached.")]
                 = False, as_json: JsonOpt = False) -> None:
    """Build an image from its recipe (cached by content hash).

    Example: antrieb images build debian-12
    """
    from antrieb.vm import images

    art = _run(images.build, name, force=force)
    info = {"name": art.name, "hash": art.content_hash, "dir": str(art.dir),
            "kernel_version": art.kernel_version}
    if as_json:
        _print_json(info)
    else:
        out.print(f"{art.name} {art.content_hash[:12]} at {art.dir}")


@images_app.command("list")
def images_list(as_json: JsonOpt = False) -> None:
    """List image recipes and whether they are built. Example: antrieb images list --json"""
    from antrieb.vm import images

    rows = _run(images.list_images)
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "suite", "built", "hash", "size", "description")
    for r in rows:
        size = f"{r.get('size', 0) / 2**20:.0f} MiB" if r.get("built") else ""
        table.add_row(r["name"], r.get("suite", ""), "yes" if r.get("built") else "no",
                      (r.get("hash") or "")[:12], size, r.get("description", ""))
    out.print(table)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check the host: accelerator, QEMU, mmdebstrap, privileges, disk; say what's missing."""
    from antrieb.doctor import report

    rep = report()
    if as_json:
        _print_json(rep)
    else:
        out.print(f"accelerator: {rep['accel']['name']} ({rep['accel']['reason']})")
        out.print(f"qemu:        {rep['qemu'] or 'missing'}")
        out.print(f"mmdebstrap:  {rep['mmdebstrap'] or 'missing'}")
        priv = rep["privileges"]
        out.print(f"privileges:  root={priv['root']} user_namespaces={priv['user_namespaces']}")
        out.print(f"cache:       {rep['cache_dir']} ({rep['free_disk_gb']} GiB free)")
        for hint in rep["hints"]:
            out.print(f"[yellow]hint:[/yellow] {hint}")
    raise typer.Exit(0 if rep["ok"] else 3)


@app.command()
def demo(nodes: Annotated[int, typer.Option(help="How many nodes (1-4).")] = 3,
         image: Annotated[str, typer.Option(help="Image of every node.")] = "debian-12",
         as_json: JsonOpt = False) -> None:
    """Bring up a cluster, show each node's name, IP and OS, prove the nodes reach each
    other over SSH by name, and tear it down. Example: antrieb demo --nodes 3"""
    from antrieb.cluster import Cluster

    def tour() -> dict:
        report: dict = {"nodes": [], "ssh": []}
        with Cluster(nodes=nodes, image=image) as cluster:
            osr = cluster.run_all(". /etc/os-release && echo \"$PRETTY_NAME\"", timeout=60)
            for node in cluster:
                report["nodes"].append({"name": node.name, "ip": node.ip,
                                        "os": osr[node.name].stdout.strip()})
            names = [n.name for n in cluster]
            for i, node in enumerate(cluster):
                peer = names[(i + 1) % len(names)]
                r = node.run(f"ssh -o BatchMode=yes {peer} hostname", timeout=120)
                report["ssh"].append({"from": node.name, "to": peer, "ok": r.ok,
                                      "answer": r.stdout.strip() or r.stderr.strip()[-200:]})
            report["ready_s"] = round(cluster.timings["cluster_ready_s"], 2)
        report["teardown_s"] = round(cluster.timings["teardown_s"], 3)
        return report

    rep = _run(tour)
    if as_json:
        _print_json(rep)
    else:
        table = Table("node", "ip", "os")
        for n in rep["nodes"]:
            table.add_row(n["name"], n["ip"], n["os"])
        out.print(table)
        for s in rep["ssh"]:
            mark = "[green]ok[/green]" if s["ok"] else "[red]FAILED[/red]"
            out.print(f"ssh {s['from']} -> {s['to']}: {mark} ({s['answer']})")
        out.print(f"cluster ready in {rep['ready_s']}s, torn down in {rep['teardown_s']}s")
    if not all(s["ok"] for s in rep["ssh"]):
        raise typer.Exit(1)


@bench_app.command("cluster")
def bench_cluster(nodes: Annotated[int, typer.Option(help="Cluster size (1-4).")] = 4,
                  driver: Annotated[str, typer.Option(help="VM driver.")] = "qemu",
                  image: Annotated[str, typer.Option(help="Image.")] = "debian-12",
                  rounds: Annotated[int, typer.Option(help="Rounds; figures are medians.")]
                  = 3, compare: Annotated[bool, typer.Option(
                      "--compare", help="Run qemu and libvirt in one run, side by side.")]
                  = False, as_json: JsonOpt = False) -> None:
    """Cold boot vs. cluster from the golden snapshot, in one run.

    Example: antrieb bench cluster --nodes 4 --json
    (--compare: both drivers, plus libvirt_over_qemu)
    """
    from antrieb.bench import bench_cluster as run_bench
    from antrieb.bench import bench_compare

    if not 1 <= rounds <= 20:
        err.print("[red]error:[/red] --rounds must be 1..20")
        raise typer.Exit(2)
    if compare:
        figures = _run(bench_compare, nodes=nodes, image=image, rounds=rounds)
    else:
        figures = _run(run_bench, nodes=nodes, image=image, driver=driver, rounds=rounds)
    if as_json:
        _print_json(figures)
    else:
        for key, value in figures.items():
            out.print(f"{key:28} {value}")


@bench_app.command("soak")
def bench_soak(clusters: Annotated[int, typer.Option(help="Clusters up and down in a row.")]
               = 100, nodes: Annotated[int, typer.Option(help="Nodes per cluster (1-4).")] = 2,
               image: Annotated[str, typer.Option(help="Image.")] = "debian-12",
               as_json: JsonOpt = False) -> None:
    """Many clusters in a row; counts of processes, files, namespaces, disk before/after.

    Example: antrieb bench soak --clusters 100 --json
    """
    from antrieb.bench_soak import bench_soak as run_soak

    if not 10 <= clusters <= 10000:
        err.print("[red]error:[/red] --clusters must be 10..10000 (first 10 vs last 10)")
        raise typer.Exit(2)
    figures = _run(run_soak, clusters=clusters, nodes=nodes, image=image,
                   progress=lambda i, s: err.print(f"[dim]cluster {i}: ready {s:.2f}s[/dim]"))
    if as_json:
        _print_json(figures)
    else:
        for key, value in figures.items():
            out.print(f"{key:20} {value}", markup=False)
    raise typer.Exit(0 if figures["no_growth"] else 1)


import antrieb.cli_experiment  # noqa: E402, F401  (registers experiment)
from antrieb import cli_cluster, cli_converge, cli_mcp, cli_store  # noqa: E402, F401  (command groups)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    # "python -m antrieb.cli": the command groups register on antrieb.cli's app, not on
    # this __main__ copy of the module
    from antrieb.cli import main as package_main

    package_main()

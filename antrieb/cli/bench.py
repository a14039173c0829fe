"""``antrieb bench cluster`` and ``antrieb bench soak``: benchmarks that print figures."""

from __future__ import annotations

from typing import Annotated

import typer

from antrieb.cli.app import JsonOpt, bench_app, call, err, out, print_json


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
        figures = call(bench_compare, nodes=nodes, image=image, rounds=rounds)
    else:
        figures = call(run_bench, nodes=nodes, image=image, driver=driver, rounds=rounds)
    if as_json:
        print_json(figures)
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
    figures = call(run_soak, clusters=clusters, nodes=nodes, image=image,
                   progress=lambda i, s: err.print(f"[dim]cluster {i}: ready {s:.2f}s[/dim]"))
    if as_json:
        print_json(figures)
    else:
        for key, value in figures.items():
            out.print(f"{key:20} {value}", markup=False)
    raise typer.Exit(0 if figures["no_growth"] else 1)


@bench_app.command("apt-phases")
def bench_apt_phases(packages: Annotated[str, typer.Option(
                         help="Packages to install, comma-separated.")] = "nginx",
                     image: Annotated[str, typer.Option(help="Image.")] = "debian-12",
                     as_json: JsonOpt = False) -> None:
    """Where apt spends its time in a guest (update on empty lists, then the install),
    per phase, measured with strace; then the wall of an update with the lists in place,
    as a re-run has them, beside one that fetches every index again.

    Example: antrieb bench apt-phases --packages nginx --json
    """
    from antrieb.bench_apt import bench_apt_phases as run_phases

    names = [p for p in packages.split(",") if p.strip()]
    figures = call(run_phases, names, image=image)
    if as_json:
        print_json(figures)
        return
    labels = {"update": "update", "update_tuned": "update (tuned)", "install": "install"}
    for cmd, label in labels.items():
        f = figures[cmd]
        out.print(f"apt-get {label}: "
                  f"{f['wall_s']:.1f}s, {f['processes']} processes, "
                  f"{f['fsyncs']} fsyncs in {f['fsync_s']:.2f}s", markup=False)
        total = sum(f["phases_s"].values()) or 1.0
        for phase, s in f["phases_s"].items():
            out.print(f"  {phase:20} {s:7.1f}s {100 * s / total:5.1f}%", markup=False)
    out.print(f"apt-get update again, lists in place (304): {figures['update_again_s']} s; "
              f"indexes fetched again: {figures['update_again_refetched_s']} s; ratio "
              f"{figures['update_again_over_refetched']:.2f}", markup=False)

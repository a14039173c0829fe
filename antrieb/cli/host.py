"""``antrieb doctor`` (what this host can do) and ``antrieb demo`` (a cluster tour)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from antrieb.cli.app import JsonOpt, app, call, out, print_json


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Check the host: accelerator, QEMU, mmdebstrap, privileges, disk; say what's missing."""
    from antrieb.doctor import report

    rep = report()
    if as_json:
        print_json(rep)
    else:
        out.print(f"accelerator: {rep['accel']['name']} ({rep['accel']['reason']})")
        out.print(f"qemu:        {rep['qemu'] or 'missing'}")
        out.print(f"mmdebstrap:  {rep['mmdebstrap'] or 'missing'}")
        priv = rep["privileges"]
        out.print(f"privileges:  root={priv['root']} user_namespaces={priv['user_namespaces']}")
        out.print(f"cache:       {rep['cache_dir']} ({rep['free_disk_gb']} GiB free)")
        for tool, package in {**rep["missing"], **rep["missing_for_tests"]}.items():
            out.print(f"[red]missing:[/red]     {tool} (apt-get install {package})")
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

    rep = call(tour)
    if as_json:
        print_json(rep)
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

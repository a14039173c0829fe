"""``antrieb cluster up``: a cluster to work on by hand, until Ctrl-C or end of input;
``antrieb cluster list|exec|down``: clusters kept by an MCP server or a notebook
(``Cluster(keep=True)``, see :mod:`antrieb.kept`).

The VMs live in a private network namespace, reachable only through antrieb; so the
command reads ``NODE COMMAND`` lines (``all COMMAND`` for every node) from standard
input, runs each and prints its output. End of input or Ctrl-C tears it all down.

Example::

    antrieb cluster up --nodes 3
    printf 'all hostname -I\\nnode1 ssh node2 uptime\\n' | antrieb cluster up --nodes 2 --json
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.markup import escape

from antrieb.cli.app import JsonOpt, app, call, err, out

cluster_app = typer.Typer(help="Clusters to work on by hand.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


def _json_line(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


@cluster_app.command("up")
def cluster_up(
    nodes: Annotated[int, typer.Option(help="How many nodes (1-4).")] = 3,
    image: Annotated[str, typer.Option(help="Image of every node.")] = "debian-12",
    timeout: Annotated[float, typer.Option(help="Seconds each command may take.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Bring a cluster up, print its nodes, run 'NODE COMMAND' lines from stdin
    ('all COMMAND' for every node), tear down at end of input or Ctrl-C. With --json:
    JSON lines, the nodes first, then one object per command result. Exit 1 if any
    command failed.

    Example: antrieb cluster up --nodes 3   (then type: node1 apt-get update)
    """
    from antrieb.cluster import Cluster

    def session() -> int:
        failures = 0
        with Cluster(nodes=nodes, image=image) as cluster:
            listing = [{"name": n.name, "ip": n.ip, "image": image} for n in cluster]
            if as_json:
                _json_line({"cluster": cluster.id, "nodes": listing})
            else:
                for n in listing:
                    out.print(f"{n['name']}  {n['ip']}  {n['image']}")
                err.print("type 'NODE COMMAND' or 'all COMMAND'; Ctrl-D or Ctrl-C tears "
                          "the cluster down")
            names = [n.name for n in cluster]
            for line in sys.stdin:
                target, _, command = line.strip().partition(" ")
                if not target:
                    continue
                if (target != "all" and target not in names) or not command.strip():
                    err.print(f"[red]say 'NODE COMMAND' with NODE one of {', '.join(names)}"
                              f" or 'all'[/red]")
                    failures += 1
                    continue
                for name in names if target == "all" else [target]:
                    r = cluster[name].run(command, timeout=timeout)
                    failures += 0 if r.exit_status == 0 else 1
                    if as_json:  # JSON lines: one object per result, as it comes
                        _json_line({"node": name, "command": command,
                                    "exit_status": r.exit_status, "stdout": r.stdout,
                                    "stderr": r.stderr, "seconds": round(r.seconds, 3)})
                    else:
                        out.print(f"[bold]{name}[/bold] $ {escape(command)}  -> exit "
                                  f"{r.exit_status} ({r.seconds:.1f}s)", highlight=False)
                        sys.stdout.write(r.stdout)
                        sys.stderr.write(r.stderr)
                        sys.stdout.flush()
        return failures

    failures = call(session)
    raise typer.Exit(1 if failures else 0)


def _kept_or_exit(cluster_id: str) -> None:
    from antrieb import kept

    if cluster_id not in [r["cluster"] for r in kept.list_kept()]:
        err.print(f"[red]no kept cluster {cluster_id!r}[/red]; see: antrieb cluster list")
        raise typer.Exit(2)


@cluster_app.command("list")
def cluster_list(as_json: JsonOpt = False) -> None:
    """Clusters kept by a running MCP server or notebook (Cluster(keep=True)): id, who
    keeps them (pid, MCP client), nodes, seconds until they expire.

    Example: antrieb cluster list --json
    """
    from antrieb import kept

    rows = kept.list_kept()
    now = time.time()
    for r in rows:
        if r.get("expires_at"):
            r["expires_in_s"] = max(0, round(r["expires_at"] - now))
    if as_json:
        _json_line({"clusters": rows})
        return
    if not rows:
        err.print("no kept clusters")
    for r in rows:
        nodes = ", ".join(f"{n['name']}={n['ip']} ({n['image']})" for n in r.get("nodes", []))
        left = f"  expires in {r['expires_in_s']}s" if "expires_in_s" in r else ""
        out.print(f"[bold]{r['cluster']}[/bold]  pid {r['pid']} {r.get('via', 'python')}"
                  f"{left}  {escape(nodes)}", highlight=False)


@cluster_app.command("exec")
def cluster_exec(
    cluster_id: Annotated[str, typer.Argument(help="The cluster id (antrieb cluster list).")],
    command: Annotated[str, typer.Argument(help="The shell command.")],
    node: Annotated[str, typer.Option(help="A node name, or 'all'.")] = "all",
    timeout: Annotated[float, typer.Option(help="Seconds the command may take.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Run a command on a kept cluster's node(s), through the process keeping it. Exit 1
    if it failed on any node.

    Example: antrieb cluster exec c1a2b3 'systemctl is-active nginx' --node web1
    """
    from antrieb import kept

    _kept_or_exit(cluster_id)
    reply = call(lambda: kept.request(cluster_id, op="exec", node=node, command=command,
                                      timeout=timeout))
    if not reply.get("ok"):
        err.print(f"[red]error:[/red] {escape(str(reply.get('error')))}")
        raise typer.Exit(2)
    failed = 0
    for r in reply["results"]:
        failed += r["exit_status"] != 0
        if as_json:
            _json_line(r)
            continue
        out.print(f"[bold]{r['node']}[/bold] -> exit {r['exit_status']} "
                  f"({r['seconds']:.1f}s)", highlight=False)
        sys.stdout.write(r["stdout"])
        sys.stderr.write(r["stderr"])
    raise typer.Exit(1 if failed else 0)


@cluster_app.command("down")
def cluster_down(
    cluster_id: Annotated[str, typer.Argument(help="The cluster id (antrieb cluster list).")],
) -> None:
    """Tear a kept cluster down (its keeper stops it and forgets it).

    Example: antrieb cluster down c1a2b3
    """
    from antrieb import kept

    _kept_or_exit(cluster_id)
    reply = call(lambda: kept.request(cluster_id, op="down"))
    if not reply.get("ok"):
        err.print(f"[red]error:[/red] {escape(str(reply.get('error')))}")
        raise typer.Exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cluster_id in [
            r["cluster"] for r in kept.list_kept()]:
        time.sleep(0.1)
    out.print(f"{cluster_id} down")

"""HTML of a run's view: the panes of the live widget and the static repr.

Plain HTML and CSS, no JavaScript: the same markup reads in JupyterLab, in nbconvert
HTML and on a code host that shows a notebook without a kernel. Every part carries a
``antrieb-*`` class (tests and the browser test find the panes by them).

Example::

    html = page(state.view)   # the whole run, as one HTML string
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from html import escape

from antrieb.notebook.state import IterationView, RunView

CSS = """<style>
.antrieb-run{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;
 line-height:1.4;color:#1f2328;max-width:1100px}
.antrieb-run h4{margin:10px 0 4px;font-size:14px}
.antrieb-header{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline;padding:8px 10px;
 border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa}
.antrieb-header .antrieb-task{font-weight:600;font-size:15px}
.antrieb-badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;
 font-size:12px;color:#fff;background:#57606a}
.antrieb-badge.converged,.antrieb-badge.pass,.antrieb-badge.ready{background:#1a7f37}
.antrieb-badge.failed,.antrieb-badge.fail,.antrieb-badge.budget_exhausted{background:#cf222e}
.antrieb-badge.running,.antrieb-badge.starting{background:#0969da}
.antrieb-badge.stopped,.antrieb-badge.down{background:#6e7781}
.antrieb-badge.retry{background:#9a6700}.antrieb-badge.troubleshoot{background:#8250df}.antrieb-badge.rerun{background:#57606a}
.antrieb-muted{color:#57606a}
.antrieb-run table{border-collapse:collapse;margin:4px 0}
.antrieb-run td,.antrieb-run th{border:1px solid #d0d7de;padding:2px 8px;
 text-align:left!important;vertical-align:top}
.antrieb-run th{background:#f6f8fa}
.antrieb-iteration{border-left:4px solid #d0d7de;margin:8px 0;padding:2px 10px}
.antrieb-iteration.passed{border-color:#1a7f37}.antrieb-iteration.failed{border-color:#cf222e}
.antrieb-iteration.running{border-color:#0969da}
.antrieb-ok{color:#1a7f37;font-weight:600}.antrieb-bad{color:#cf222e;font-weight:600}
.antrieb-run pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;padding:6px;
 margin:3px 0;max-height:320px;overflow:auto;font-size:12px;white-space:pre-wrap;
 text-align:left}
.antrieb-recovery{background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;padding:4px 8px;
 margin:4px 0}
.antrieb-diff pre{white-space:pre}
.antrieb-diff-add{background:#dafbe1;display:block}.antrieb-diff-del{background:#ffebe9;
 display:block}.antrieb-diff-hunk{color:#8250df;display:block}
.antrieb-turn{margin:6px 0}.antrieb-ask{background:#ddf4ff;border-radius:6px;padding:4px 8px;
 display:inline-block}.antrieb-answer{margin-left:24px}
.antrieb-bars .antrieb-bar{display:flex;height:16px;margin:2px 0;min-width:2px}
.antrieb-bars .antrieb-bar span{display:block;height:16px}
.antrieb-legend span{display:inline-block;margin-right:10px}
.antrieb-legend i{display:inline-block;width:10px;height:10px;margin-right:3px}
</style>"""

# Segments of the per-iteration timing bar: (label, colour, keys in the iteration's timings)
SEGMENTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("layer build", "#54aeff", ("layer_build_s",)),
    ("cluster up", "#0969da", ("cluster_up_s", "prepare_s")),
    ("apply", "#bf8700", ("apply_s",)),
    ("checks", "#1a7f37", ("checks_s",)),
    ("idempotence re-run", "#8c959f", ("rerun_apply_s", "rerun_checks_s")),
    ("troubleshoot", "#8250df", ()),
    ("LLM", "#cf222e", ()),
    ("teardown", "#57606a", ()),
]


def segment_seconds(it: IterationView) -> dict[str, float]:
    """The seconds of each timing segment of one iteration, as the engine reported them."""
    out = {label: sum(it.timings.get(k, 0.0) for k in keys) for label, _, keys in SEGMENTS}
    out["troubleshoot"] = sum(t.seconds for t in it.turns)
    out["LLM"] = it.llm_s
    out["teardown"] = it.teardown_s or 0.0
    return out


def layer_note(it: IterationView) -> str:
    """", 2 nodes from a layer, installs 30s shorter" for an iteration that used layers
    (the saving is measured against the run's last attempt from the pristine golden)."""
    hits = int(it.timings.get("layer_hits", 0))
    if not hits:
        return ""
    saved = it.timings.get("install_saved_s")
    shorter = f", installs {saved:.0f}s shorter" if saved is not None else ""
    return f", {hits} node{'s' if hits > 1 else ''} from a layer{shorter}"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _model(provider: str, model: str) -> str:
    if model == "hand-authored":  # the curated examples' recordings are not a model
        return f"{_e(provider)}: hand-written recording"
    return f"{_e(provider)}:{_e(model)}"


def _tokens(tokens: int | None) -> str:
    """A hand-written recording measured nothing: say so rather than show a number."""
    return "tokens not measured (hand-written recording)" if tokens is None \
        else f"{tokens:,} tokens"


def _badge(text: str, cls: str | None = None) -> str:
    return f'<span class="antrieb-badge {_e(cls or text)}">{_e(text)}</span>'


def _when(at: float | None) -> str:
    if at is None:
        return "?"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def header(v: RunView, now: float | None = None) -> str:
    it = v.current
    of = f" of {v.max_iterations}" if v.max_iterations else ""
    iteration = f"iteration {it.number}{of} ({it.phase})" if it else "no iteration yet"
    parts = [
        f'<span class="antrieb-task">{_e(v.task_name or "run")}</span>',
        _badge(v.status),
        f'<span class="antrieb-iter">{_e(iteration)}</span>',
        f'<span>elapsed {v.elapsed(now):.1f}s</span>',
        f'<span>cost: {_tokens(v.tokens)} in {v.llm_calls} LLM call'
        f'{"s" if v.llm_calls != 1 else ""}'
        + (f' ({v.llm_failures} re-asked)' if v.llm_failures else "") + '</span>',
        f'<span class="antrieb-muted">model {_model(v.provider, v.model)} · '
        f'{_e(v.tool)}</span>',
    ]
    if v.run_id:
        parts.append(f'<span class="antrieb-muted">run {_e(v.run_id)}</span>')
    if v.playback:
        p = v.playback
        parts.append(f'<span class="antrieb-playback">▶ playback of a run recorded '
                     f'{_e(_when(p.get("recorded_at")))} (real VMs, {_e(p.get("accel", "?"))})'
                     f'{", at " + _e(p["speed"]) + "× speed" if p.get("speed") else ""}</span>')
    out = f'<div class="antrieb-header">{"".join(parts)}</div>'
    if v.request:
        out += f'<div class="antrieb-muted" style="margin:4px 2px">{_e(v.request.strip())}</div>'
    if v.reason and v.status != "running":
        out += f'<div style="margin:4px 2px"><b>{_e(v.status)}</b>: {_e(v.reason)}</div>'
    return out


def cluster_panel(v: RunView) -> str:
    it = v.current
    if it is None:
        return '<div class="antrieb-cluster antrieb-muted">no cluster yet</div>'
    rows = "".join(
        f"<tr><td>{_e(node)}</td><td>{_e(role)}</td><td>{_e(it.ips.get(node, '-'))}</td>"
        f"<td>{_badge(it.node_state.get(node, 'pending'))}</td>"
        f"<td>{it.node_boot_s[node]:.2f}s</td></tr>" if node in it.node_boot_s else
        f"<tr><td>{_e(node)}</td><td>{_e(role)}</td><td>{_e(it.ips.get(node, '-'))}</td>"
        f"<td>{_badge(it.node_state.get(node, 'pending'))}</td><td></td></tr>"
        for node, role in it.roles.items())
    boot = f", up in {it.boot_s:.2f}s ({_e(it.accel)})" if it.boot_s is not None else ""
    return (f'<div class="antrieb-cluster"><h4>Cluster {_e(it.cluster_id or "")} '
            f'{_badge(it.cluster_state)} <span class="antrieb-muted">iteration '
            f'{it.number}{boot}</span></h4><table><tr><th>node</th><th>role</th><th>IP</th>'
            f'<th>state</th><th>ready</th></tr>{rows}</table></div>')


def _mark(ok: bool) -> str:
    return '<span class="antrieb-ok">pass</span>' if ok else '<span class="antrieb-bad">FAIL</span>'


def _steps_table(it: IterationView, rerun: bool) -> str:
    steps = [s for s in it.steps if s.rerun == rerun]
    checks = [c for c in it.checks if c.rerun == rerun and not c.after_reboot]
    if not steps and not checks:
        return ""
    rows = []
    for s in steps:
        status = "timed out" if s.timed_out else f"exit {s.exit_status}"
        extra = f", installs {s.install_s:.1f}s" if s.install_s else ""
        extra += f", changed={s.changed}" if s.changed is not None else ""
        out = "" if s.ok else f"<pre>{_e(s.output_tail[-700:])}</pre>"  # errors come last
        rows.append(f'<tr class="antrieb-step"><td>step</td><td>{_e(s.artifact)}</td>'
                    f"<td>{_e(s.node)}</td><td>{_mark(s.ok)} {_e(status)}</td>"
                    f"<td>{s.seconds:.1f}s{extra}{out}</td></tr>")
    for c in checks:
        out = "" if c.passed or not c.output_tail else f"<pre>{_e(c.output_tail[-800:])}</pre>"
        rows.append(f'<tr class="antrieb-check"><td>check</td><td>{_e(c.name)}</td>'
                    f"<td>{_e(c.node)}</td><td>{_mark(c.passed)}</td>"
                    f"<td>{_e(c.detail)} ({c.seconds:.1f}s){out}</td></tr>")
    title = "idempotence: the same artifacts applied again on the same cluster" if rerun \
        else "steps and checks"
    return (f'<div class="antrieb-muted">{title}</div><table><tr><th></th><th>what</th>'
            f'<th>node</th><th>result</th><th>detail</th></tr>{"".join(rows)}</table>')


def diff_html(before: dict[str, str], after: dict[str, str], label: str) -> str:
    """A unified diff per artifact, coloured; new artifacts shown whole."""
    blocks = []
    for name in list(dict.fromkeys([*before, *after])):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        lines = difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(),
                                     f"{name} (before)", f"{name} ({label})", lineterm="", n=2)
        out = []
        for line in lines:
            cls = ("antrieb-diff-hunk" if line.startswith("@@") else
                   "antrieb-diff-add" if line.startswith("+") else
                   "antrieb-diff-del" if line.startswith("-") else "")
            out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line) + "\n")
        blocks.append(f"<div><b>{_e(name)}</b><pre>{''.join(out)}</pre></div>")
    if not blocks:
        return '<div class="antrieb-diff antrieb-muted">artifacts unchanged</div>'
    return f'<div class="antrieb-diff">{"".join(blocks)}</div>'


def _artifacts_html(it: IterationView, previous: IterationView | None) -> str:
    if not it.artifacts:
        return ""
    source = f" (from {_e(it.artifacts_from)})" if it.artifacts_from else ""
    if previous is None or not previous.artifacts:
        body = "".join(f"<div><b>{_e(k)}</b><pre>{_e(t)}</pre></div>"
                       for k, t in it.artifacts.items())
        return (f'<details class="antrieb-artifacts"><summary>artifacts{source}</summary>'
                f"{body}</details>")
    return (f'<details open class="antrieb-diff-block"><summary>diff against iteration '
            f'{previous.number}{source}</summary>'
            f'{diff_html(previous.artifacts, it.artifacts, f"iteration {it.number}")}</details>')


def iteration_html(it: IterationView, previous: IterationView | None) -> str:
    state = "running" if it.passed is None else "passed" if it.passed else "failed"
    title = "final proof of the synthesized artifacts" if it.phase == "verify" else "attempt"
    parts = [f'<div class="antrieb-iteration {state}" data-iteration="{it.number}">'
             f"<h4>Iteration {it.number}: {title} {_badge(state, 'pass' if it.passed else None)}"
             f' <span class="antrieb-muted">cluster {_e(it.cluster_id or "…")}</span></h4>',
             _artifacts_html(it, previous), _steps_table(it, False), _steps_table(it, True)]
    if it.diagnosis:
        d = it.diagnosis
        ev = "".join(f"<li><code>{_e(x[:300])}</code></li>" for x in d["evidence"][:5])
        parts.append(f'<div class="antrieb-diagnosis">diagnosis: '
                     f'<b>{_e(d["failure_class"])}</b>'
                     f'{" on " + _e(d["node"]) if d.get("node") else ""}: {_e(d["summary"])}'
                     f"<ul>{ev}</ul></div>")
    if it.recovery:
        r = it.recovery
        parts.append(f'<div class="antrieb-recovery">path {_badge(r["path"])} '
                     f"because {_e(r['reason'])}</div>")
    if it.turns:
        parts.append(f'<div class="antrieb-muted">troubleshoot session: {len(it.turns)} '
                     "command(s), see the transcript below</div>")
    if it.explanation:
        parts.append(f"<div>the model's correction: <i>{_e(it.explanation)}</i></div>")
    parts.append("</div>")
    return "".join(parts)


def timeline(v: RunView) -> str:
    items = [iteration_html(it, v.iterations[i - 1] if i else None)
             for i, it in enumerate(v.iterations)]
    return f'<div class="antrieb-timeline"><h4>Iterations</h4>{"".join(items)}</div>'


def transcript(v: RunView) -> str:
    sessions = [it for it in v.iterations if it.turns]
    if not sessions:
        return ""
    out = ['<div class="antrieb-transcript"><h4>Troubleshoot transcript</h4>']
    for it in sessions:
        out.append(f'<div class="antrieb-muted">on the live failed cluster of iteration '
                   f"{it.number}</div>")
        for t in it.turns:
            why = f' <span class="antrieb-muted">— {_e(t.why)}</span>' if t.why else ""
            out.append(f'<div class="antrieb-turn"><div class="antrieb-ask">LLM asks on '
                       f"<b>{_e(t.node)}</b>: <code>$ {_e(t.command)}</code>{why}</div>"
                       f'<div class="antrieb-answer">antrieb ran it: exit {t.exit_status}, '
                       f"{t.seconds:.1f}s<pre>{_e(t.output_tail[-2000:])}</pre></div></div>")
        if it.explanation:
            out.append(f"<div>the session ended with a fix: <i>{_e(it.explanation)}</i></div>")
    out.append("</div>")
    return "".join(out)


def final(v: RunView) -> str:
    if not v.synthesized:
        return ""
    ver = v.verify
    if ver is None or ver.passed is None:
        proof = '<span class="antrieb-muted">being proven on a fresh cluster…</span>'
    else:
        rerun = any(s.rerun for s in ver.steps)
        ok_first = all(s.ok for s in ver.steps if not s.rerun) and ver.checks and all(
            c.passed for c in ver.checks if not c.rerun and not c.after_reboot)
        idem = ("idempotent: the second run on the same cluster succeeded and every check "
                "passed again" if ver.passed else "NOT proven: " +
                ("the second run failed" if rerun else "the first run on a fresh cluster failed"))
        changed = [s.changed for s in ver.steps if s.rerun and s.changed is not None]
        if changed:
            idem += f" (Ansible changed={sum(changed)} on the second run)"
        proof = (f'{_mark(bool(ok_first))} one pass on fresh cluster {_e(ver.cluster_id)}; '
                 f'<span class="antrieb-idempotence">{_mark(bool(ver.passed))} {_e(idem)}</span>'
                 + proof_gates(ver.proof))
    body = "".join(f"<div><b>{_e(k)}</b><pre>{_e(t)}</pre></div>"
                   for k, t in v.synthesized.items())
    notes = f"<div><i>{_e(v.synthesis_notes)}</i></div>" if v.synthesis_notes else ""
    return (f'<div class="antrieb-final"><h4>Final synthesized script</h4><div>{proof}</div>'
            f"{notes}{body}</div>")


def proof_gates(gates: dict | None) -> str:
    """The proof's gates (fresh server, idempotence, reboot) and the residue list."""
    if not gates:
        return ""
    reboot = gates.get("reboot", "not_run")
    times = ", ".join(f"{n} {s:.0f}s" for n, s in sorted((gates.get("reboot_s") or {}).items()))
    rows = [
        (bool(gates.get("fresh_server")), "fresh server: empty apt lists, each node its own "
                                          "machine-id and SSH host key"),
        (reboot == "passed", "reboot: every node rebooted, every check passed again"
         + (f" ({times})" if times else "") if reboot != "not_run" else "reboot: not run"),
    ]
    residue = gates.get("residue") or []
    items = "".join(f"<li>{_e(r.get('node'))}: {_e(r.get('kind'))} <code>{_e(r.get('item'))}"
                    f"</code> <span class='antrieb-muted'>{_e(r.get('detail'))}</span></li>"
                    for r in residue)
    left = (f"<div class='antrieb-residue'><b>Residue</b> ({len(residue)}"
            f"{', fails the proof: strict task' if gates.get('strict') else ', a finding'})"
            f"<ul>{items}</ul></div>" if residue else
            "<div class='antrieb-residue'><b>Residue</b>: none left behind</div>")
    return ("<div class='antrieb-proof'>" + "".join(
        f"<div>{_mark(ok)} {_e(text)}</div>" for ok, text in rows) + left + "</div>")


def timing_bars(v: RunView) -> str:
    """The per-iteration stacked bar as plain HTML (for reprs without JavaScript)."""
    rows = [(it, segment_seconds(it)) for it in v.iterations if it.passed is not None]
    if not rows:
        return ""
    longest = max(sum(s.values()) for _, s in rows) or 1.0
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(label)}</span>'
                     for label, c, _ in SEGMENTS)
    lines = []
    for it, seg in rows:
        spans = "".join(
            f'<span title="{_e(label)} {seg[label]:.1f}s" '
            f'style="width:{100 * seg[label] / longest:.2f}%;background:{c}"></span>'
            for label, c, _ in SEGMENTS if seg[label] > 0)
        lines.append(f"<tr><td>iteration {it.number} ({it.phase}){layer_note(it)}</td>"
                     f"<td style='width:70%'>"
                     f'<div class="antrieb-bar">{spans}</div></td>'
                     f"<td>{sum(seg.values()):.1f}s</td></tr>")
    return (f'<div class="antrieb-bars antrieb-timing"><h4>Time per iteration</h4>'
            f'<div class="antrieb-legend">{legend}</div><table>{"".join(lines)}</table></div>')


def page(v: RunView, now: float | None = None) -> str:
    """The whole run as one static HTML document fragment."""
    return (f'{CSS}<div class="antrieb-run">{header(v, now)}{cluster_panel(v)}{timeline(v)}'
            f"{timing_bars(v)}{transcript(v)}{final(v)}</div>")

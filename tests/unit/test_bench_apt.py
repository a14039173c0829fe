"""The apt phase table from a real trace: ``apt-get install -y -q nginx`` on a debian-12
node under TCG, traced as :func:`antrieb.bench_apt.measure` traces it (captured from a VM
on 2026-12-02; ``antrieb bench apt-phases --packages nginx`` makes a new one)."""

from __future__ import annotations

from pathlib import Path

from antrieb.bench_apt import PHASES, parse_trace, phase_seconds

TRACE = Path(__file__).parent / "data" / "apt-install-nginx.strace"


def test_every_moment_goes_to_one_phase_and_the_phases_are_found():
    procs = parse_trace(TRACE.read_text())
    start = min(p.start for p in procs.values())
    end = max(p.end for p in procs.values())
    phases = phase_seconds(procs)
    assert set(phases) == set(PHASES)
    assert abs(sum(phases.values()) - (end - start)) < 0.05
    for phase in ("apt", "dpkg", "maintainer scripts", "systemd", "debconf"):
        assert phases[phase] > 0.2, (phase, phases)
    assert phases["systemd"] > phases["dpkg"]  # daemon-reloads dominate nginx's install
    postinst = [p for p in procs.values() if p.program.endswith("nginx-common.postinst")]
    assert postinst and postinst[0].parent in procs
    assert sum(p.fsyncs for p in procs.values()) > 50

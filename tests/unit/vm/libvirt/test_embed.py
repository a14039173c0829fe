"""What the libvirt driver keeps around libvirt itself: the embedded root's capabilities
cache (copied in without the flag that makes libvirt probe CPU features one QMP command
at a time, kept when libvirt renewed it) and the daemonized QEMUs a dead supervisor left."""

from __future__ import annotations

from antrieb.vm.libvirt.embed import SLOW_CPU_PROBE_FLAG, fit_caps, keep_caps, prepare_root

CAPS = (b"<qemuCaps>\n  <flag name='cpu-cache'/>\n  " + SLOW_CPU_PROBE_FLAG +
        b"\n  <flag name='cpu-max'/>\n</qemuCaps>\n")


def test_fit_caps_drops_only_that_flag():
    fitted = fit_caps(CAPS)
    assert SLOW_CPU_PROBE_FLAG not in fitted
    assert fitted == (b"<qemuCaps>\n  <flag name='cpu-cache'/>\n  <flag name='cpu-max'/>\n"
                      b"</qemuCaps>\n")
    assert fit_caps(fitted) == fitted


def test_the_root_gets_the_fitted_copy_and_the_cache_stays(tmp_path):
    cache, root = tmp_path / "caps", tmp_path / "root"
    cache.mkdir()
    (cache / "abc.xml").write_bytes(CAPS)
    prepare_root(str(root), str(cache))
    assert (root / "etc" / "qemu.conf").read_text().startswith("user = \"root\"")
    assert (root / "cache/qemu/capabilities/abc.xml").read_bytes() == fit_caps(CAPS)
    assert (cache / "abc.xml").read_bytes() == CAPS


def test_keep_caps_keeps_a_renewed_cache_fitted_and_only_when_changed(tmp_path):
    cache, root = tmp_path / "caps", tmp_path / "root"
    prepare_root(str(root), str(cache))  # no cache yet: libvirt will probe
    renewed = root / "cache/qemu/capabilities"
    renewed.mkdir(parents=True, exist_ok=True)
    (renewed / "new.xml").write_bytes(CAPS)  # what libvirt's probe wrote
    assert keep_caps(str(root), str(cache))
    assert (cache / "new.xml").read_bytes() == fit_caps(CAPS)
    assert not keep_caps(str(root), str(cache))  # unchanged: nothing rewritten


def test_qemus_do_not_outlive_a_dead_supervisor(tmp_path):
    """QEMUs of a libvirt are daemonized; the owner kills the ones a dead supervisor left,
    and never a process that merely got a recorded pid again."""
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from antrieb.vm.libvirt.driver import DomainProcesses
    from antrieb.vm.supervisor_client import wait_gone

    qemu = subprocess.Popen(["sleep", "60"])  # stands in for a QEMU libvirt started
    other = subprocess.Popen(["sleep", "60"])
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    try:
        procs = DomainProcesses()
        procs.add([qemu.pid, other.pid])
        procs._known[other.pid] -= 1  # as if the recorded process ended and the pid was reused
        procs.watch(SimpleNamespace(proc=supervisor))
        qemu.wait(timeout=10)  # killed once the supervisor ended
        assert qemu.returncode == -9
        time.sleep(0.2)
        assert other.poll() is None
        assert procs.kill_survivors() == []  # nothing left to kill, nothing killed twice
        assert not wait_gone(other.pid, 0.1)
    finally:
        for p in (qemu, other, supervisor):
            p.kill()
            p.wait()

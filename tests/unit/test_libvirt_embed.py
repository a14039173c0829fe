"""The embedded libvirt root's capabilities cache: copied in without the flag that makes
libvirt probe CPU features one QMP command at a time, and kept when libvirt renewed it."""

from __future__ import annotations

from antrieb.vm.libvirt_embed import SLOW_CPU_PROBE_FLAG, fit_caps, keep_caps, prepare_root

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

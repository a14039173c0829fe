"""The QEMU command line: clones map the golden RAM privately and restore its state."""

from __future__ import annotations

import pytest

from antrieb.errors import ConfigError
from antrieb.vm import accel
from antrieb.vm.qemu.argv import kernel_append, qemu_argv
from antrieb.vm.spec import VMSpec


def spec(**kw) -> VMSpec:
    base = dict(name="node1", kernel="/k", initrd="/i", append="console=ttyS0", accel="tcg",
                base_disk="/golden/disk.qcow2", mac="52:54:00:77:00:0b", tap="tap0")
    return VMSpec(**{**base, **kw})


def argv_of(s: VMSpec) -> str:
    return " ".join(qemu_argv(s, monitor_fd=5, agent_fd=6,
                              console_path="/run/c", incoming_fd=7 if s.incoming else None))


def test_clone_maps_golden_ram_privately_and_waits_for_state():
    a = argv_of(spec(mem_path="/golden/mem", mem_share=False, incoming="/golden/state"))
    assert "mem-path=/golden/mem,share=off" in a
    assert "-incoming defer" in a
    assert "microvm" in a and "-accel tcg" in a and "-cpu max" in a


def test_golden_shares_its_ram_file():
    a = argv_of(spec(mem_path="/golden/mem", mem_share=True))
    assert "share=on" in a and "-incoming" not in a


def test_kvm_uses_host_cpu():
    a = argv_of(spec(accel="kvm"))
    assert "-accel kvm" in a and "-cpu host" in a


def test_devices_are_wired_to_inherited_fds():
    a = argv_of(spec())
    assert "socket,id=ag,fd=6" in a and "socket,id=mon,fd=5" in a
    assert "virtserialport,chardev=ag,name=agent" in a
    assert "ifname=tap0" in a and "mac=52:54:00:77:00:0b" in a


def test_kernel_append_pins_tsc_when_known():
    assert "tsc_early_khz=2100000" in kernel_append(tsc_khz=2100000)
    assert "tsc_early_khz" not in kernel_append(tsc_khz=None)


def test_accel_can_be_forced(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTRIEB_ACCEL", "tcg")
    assert accel.detect(tmp_path / "k", tmp_path / "i").name == "tcg"
    monkeypatch.setenv("ANTRIEB_ACCEL", "hvf")
    with pytest.raises(ConfigError, match="kvm or tcg"):
        accel.detect(tmp_path / "k", tmp_path / "i")


def test_probe_without_kvm_device(monkeypatch, tmp_path):
    monkeypatch.setattr(accel.os.path, "exists", lambda p: False)
    verdict = accel.probe_kvm(tmp_path / "k", tmp_path / "i")
    assert verdict.name == "tcg" and "no /dev/kvm" in verdict.reason


def test_restore_needs_the_state_fd():
    with pytest.raises(ValueError, match="incoming_fd"):
        qemu_argv(spec(incoming="/golden/state"), monitor_fd=5, agent_fd=6,
                  console_path="/c")


CPUINFO = """processor\t: 0
cpu MHz\t\t: 2100.000
flags\t\t: fpu tsc constant_tsc {extra}

processor\t: 1
cpu MHz\t\t: 1800.000
flags\t\t: fpu tsc constant_tsc tsc_known_freq
"""


def test_tsc_from_cpuinfo_only_when_the_kernel_knows_it_exactly():
    from antrieb.vm.accel import _tsc_from_cpuinfo

    assert _tsc_from_cpuinfo(CPUINFO.format(extra="tsc_known_freq")) == 2_100_000
    assert _tsc_from_cpuinfo(CPUINFO.format(extra="")) is None  # measured: not trusted


def test_tsc_hint_is_kept_for_the_boot(tmp_path, monkeypatch):
    """The hint is part of the golden key: once found, later processes of this boot get
    the same answer even when the kernel log line has scrolled away."""
    from antrieb.vm import accel

    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path))
    monkeypatch.delenv("ANTRIEB_TSC_KHZ", raising=False)
    monkeypatch.setattr(accel, "_tsc_from_kernel_log", lambda: 2_345_678)
    monkeypatch.setattr(accel, "_tsc_from_cpuinfo", lambda: None)
    accel.host_tsc_khz.cache_clear()
    try:
        assert accel.host_tsc_khz() == 2_345_678
        monkeypatch.setattr(accel, "_tsc_from_kernel_log", lambda: None)  # scrolled out
        accel.host_tsc_khz.cache_clear()
        assert accel.host_tsc_khz() == 2_345_678
        monkeypatch.setenv("ANTRIEB_TSC_KHZ", "1000000")
        accel.host_tsc_khz.cache_clear()
        assert accel.host_tsc_khz() == 1_000_000
    finally:
        accel.host_tsc_khz.cache_clear()

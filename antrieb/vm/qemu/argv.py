"""The QEMU command line of a microvm: a pure function of a :class:`VMSpec`.

Flags are the ones measured to boot here (see DESIGN.md): microvm without option ROMs,
direct kernel boot, virtio-mmio devices, file-backed RAM so a golden snapshot's memory
can be mapped copy-on-write by every clone.
"""

from __future__ import annotations

from antrieb import hosttools
from antrieb.vm.spec import VMSpec

QEMU_BINARY = "qemu-system-x86_64"


def qemu_binary() -> str:
    return hosttools.require(QEMU_BINARY)


def tcg_cpu() -> str:
    # Measured here: qemu64 and Nehalem restore and boot no faster than max under TCG.
    return "max"


def kernel_append(*, accel: str = "tcg", tsc_khz: int | None = None, extra: str = "") -> str:
    # tsc_early_khz avoids the PIT calibration that hangs ~1 boot in 5 under TCG
    # (microvm has neither HPET nor a PM timer).
    parts = [
        # loglevel=5 rather than quiet: warnings (a failed timer calibration...) reach the
        # console kept for diagnosis of a boot that hangs.
        "console=ttyS0", "loglevel=5", "panic=-1", "mitigations=off", "tsc=reliable",
        "no_timer_check", "systemd.show_status=0", "random.trust_cpu=on",
    ]
    if tsc_khz:
        parts.append(f"tsc_early_khz={tsc_khz}")
    if accel == "tcg":
        # TCG translates guest code per (virtual address, page): with randomized mappings
        # every new process re-translates libc and ld.so. Fixed mappings let a clone's
        # processes share translations (throw-away test VMs don't need ASLR).
        parts.append("norandmaps")
    if extra:
        parts.append(extra)
    return " ".join(parts)


def _drive(spec: VMSpec) -> str:
    if spec.disk:  # a persistent overlay (the golden's): written back properly
        return f"id=d0,file={spec.disk},format=qcow2,if=none,discard=unmap"
    # A throw-away overlay that QEMU itself creates in $TMPDIR (the supervisor's private
    # tmpfs) and deletes: no qemu-img process per clone.
    return (f"id=d0,file={spec.base_disk},format={spec.base_format},if=none,"
            "snapshot=on,cache=unsafe,discard=unmap")


# virtio-net without a control queue (both drivers): the guest then changes its MAC
# locally and at once (the device stays promiscuous) instead of spinning on a control
# command, which under TCG on a busy host cost a clone 30-160 ms; and no announce after a
# restore.
VIRTIO_NET_OFF = ("ctrl_vq", "ctrl_rx", "ctrl_rx_extra", "ctrl_vlan", "ctrl_mac_addr",
                  "ctrl_guest_offloads", "guest_announce", "mq")


def qemu_argv(spec: VMSpec, *, monitor_fd: int, agent_fd: int,
              console_path: str, incoming_fd: int | None = None,
              binary: str = QEMU_BINARY) -> list[str]:
    """The argv that starts ``spec``; monitor and agent are inherited socket fds, and a
    clone reads its golden's device state from the inherited ``incoming_fd``."""
    if spec.accel == "kvm":
        accel, cpu = ["-accel", "kvm"], ["-cpu", "host"]
    else:
        accel, cpu = ["-accel", "tcg,thread=multi"], ["-cpu", tcg_cpu()]
    argv = [
        binary, "-name", f"antrieb-{spec.name},debug-threads=off",
        "-M", "microvm,x-option-roms=off,rtc=on,isa-serial=on",
        *accel, *cpu,
        "-m", str(spec.mem_mb), "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-nographic",  # a guest reboot resets in place
        "-kernel", spec.kernel, "-initrd", spec.initrd, "-append", spec.append,
        "-drive", _drive(spec),
        "-device", "virtio-blk-device,drive=d0",
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"virtio-net-device,netdev=n0,mac={spec.mac},"
        + ",".join(f"{prop}=off" for prop in VIRTIO_NET_OFF),
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=ag,fd={agent_fd}",
        "-device", "virtserialport,chardev=ag,name=agent",
        "-device", "vmgenid",
        "-chardev", f"file,id=con,path={console_path}",
        "-serial", "chardev:con",
        "-chardev", f"socket,id=mon,fd={monitor_fd}",
        "-mon", "chardev=mon,mode=control",
    ]
    if spec.mem_path:
        share = "on" if spec.mem_share else "off"
        argv += [
            "-object",
            f"memory-backend-file,id=mem,size={spec.mem_mb}M,mem-path={spec.mem_path},"
            f"share={share}",
            "-machine", "memory-backend=mem",
        ]
    if spec.incoming:
        if incoming_fd is None:
            raise ValueError("a restored VM needs the golden state as incoming_fd")
        # The state comes from the inherited fd (`migrate-incoming fd:N` once the monitor
        # has set x-ignore-shared): no `exec:cat` child forked off a large QEMU process.
        argv += ["-incoming", "defer"]
    return argv

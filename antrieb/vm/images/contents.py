"""What every image holds beyond its recipe's packages: the guest agent, the units
masked for speed, the kernel package. All of it goes into an image's content hash
(:meth:`~antrieb.vm.images.recipes.Recipe.content_hash`): bump :data:`BUILD_VERSION`
whenever :mod:`antrieb.vm.images.builder` changes what an image contains.
"""

from __future__ import annotations

from pathlib import Path

from antrieb.vm.images import initramfs

BUILD_VERSION = 5  # 5: known_hosts checked (each node has its own host key)
GUEST_DIR = Path(__file__).resolve().parent.parent / "guest"
AGENT = GUEST_DIR / "agent.py"
AGENT_SERVICE = GUEST_DIR / "antrieb-agent.service"
AGENTD_SOURCE = GUEST_DIR / "agentd.c"
INPUT_FILES = (AGENT, AGENTD_SOURCE, AGENT_SERVICE, initramfs.INIT_SCRIPT)

# The agent needs python3 and ip; kmod lets later steps modprobe from /lib/modules.
REQUIRED_PACKAGES = ("systemd-sysv", "openssh-server", "python3", "iproute2", "kmod")
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
UNSTABLE_SUITES = ("sid", "unstable", "experimental")  # no -updates, no -security

# Units that cost CPU at boot or in the background and serve no purpose in a
# throw-away VM; under TCG each one is up to seconds of emulated work (measured with
# systemd-analyze blame). Kernel modules they preload still load on demand.
MASKED_UNITS = (
    "getty@tty1.service", "serial-getty@ttyS0.service", "console-getty.service",
    "getty-static.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "apt-daily.service", "apt-daily-upgrade.service", "e2scrub_all.timer",
    "e2scrub_all.service", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "dpkg-db-backup.timer", "systemd-timesyncd.service", "systemd-tmpfiles-clean.timer",
    "systemd-firstboot.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "dev-hugepages.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-config.mount", "modprobe@dm_mod.service",
    "modprobe@efi_pstore.service", "modprobe@loop.service", "modprobe@fuse.service",
    "modprobe@configfs.service", "modprobe@drm.service", "systemd-pstore.service",
)

# trixie's systemd offers sshd over AF_VSOCK; without a vsock device it fails at every boot.
MASKED_GENERATORS = ("systemd-ssh-generator",)


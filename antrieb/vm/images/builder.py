"""The steps that turn a :class:`~antrieb.vm.images.Recipe` into bootable artefacts.

1. ``mmdebstrap`` makes the root filesystem through a loopback :class:`AptProxy`, so
   every package lands in the shared apt cache and the image's sources.list names
   only :data:`~antrieb.vm.net.plan.APT_PSEUDO_HOST`. A customize hook downloads the
   suite's cloud kernel inside the chroot (its apt lists are the suite's).
2. The kernel package is unpacked into the rootfs (modules stay available in the VM)
   and its vmlinuz copied out; ``depmod`` indexes the modules.
3. The rootfs is fitted for antrieb: agent, sshd, masked boot-time CPU burners, apt
   pointed at the cluster's proxy.
4. Our own initramfs (:mod:`antrieb.vm.images.initramfs`).
5. ``mkfs.ext4 -d`` writes the rootfs into a sparse raw disk, no loop mounts.

Bump :data:`~antrieb.vm.images.contents.BUILD_VERSION` whenever these steps change what
an image contains: it is part of every image's content hash.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from antrieb import config, events, hosttools
from antrieb.errors import ImageBuildError, MissingToolError
from antrieb.vm.images import initramfs
from antrieb.vm.images.artifacts import ImageArtifacts
from antrieb.vm.images.contents import (
    AGENT,
    AGENT_SERVICE,
    AGENTD_SOURCE,
    KERNEL_METAPACKAGE,
    MASKED_GENERATORS,
    MASKED_UNITS,
    REQUIRED_PACKAGES,
    UNSTABLE_SUITES,
)
from antrieb.vm.images.recipes import Recipe
from antrieb.vm.net.aptproxy import AptProxy
from antrieb.vm.net.mirror import SECURITY, debian_upstreams
from antrieb.vm.net.plan import APT_PSEUDO_HOST, GATEWAY_IP, PROXY_PORT

# What a build runs on the host; antrieb.hosttools names each one's package.
BUILD_TOOLS = ("mmdebstrap", "setpriv", "unshare", "mkfs.ext4", "dpkg-deb", "depmod", "tar",
               "chroot", "qemu-img", "gcc")

# mmdebstrap's progress lines -> how far the rootfs step is.
_MMDEBSTRAP_PHASES = (
    ("running apt-get update", 0.05), ("downloading packages", 0.15),
    ("extracting archives", 0.3), ("installing essential", 0.4),
    ("installing remaining", 0.55), ("customize-hook", 0.85), ("cleaning", 0.95),
)
_STEP_SPAN = {  # step -> (start, end) of the whole build's fraction
    "mmdebstrap": (0.0, 0.6), "kernel": (0.6, 0.72), "customize": (0.72, 0.75),
    "initramfs": (0.75, 0.8), "disk": (0.8, 1.0),
}

# Runs on the host with the chroot as $1, while mmdebstrap has /proc and /dev mounted
# in it. The metapackage's dependency names the versioned kernel package.
_KERNEL_HOOK = r"""set -eu
root="$1"
dir=/var/tmp/antrieb-kernel
mkdir -p "$root$dir"
chmod 0777 "$root$dir"
pkg=$(chroot "$root" apt-cache show --no-all-versions {meta} \
      | sed -n 's/^Depends: *\([^ ,]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || {{ echo "antrieb: cannot resolve {meta}" >&2; exit 1; }}
echo "antrieb: kernel package $pkg"
chroot "$root" sh -c "cd $dir && apt-get download -q $pkg"
echo "$pkg" > "$root$dir/package"
if [ ! -f "$root/etc/ssh/ssh_host_ed25519_key" ]; then
    chroot "$root" ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
"""


def preflight() -> None:
    """Raise :class:`MissingToolError` unless this host can build images."""
    if os.geteuid() != 0:
        raise MissingToolError(
            "root", "image builds run mmdebstrap in root mode: run as root (for example "
            "`sudo antrieb images build NAME`); built images are then usable by anyone")
    for tool in BUILD_TOOLS:
        hosttools.require(tool)
    if not initramfs.BUSYBOX.exists() or not initramfs.is_static_elf(initramfs.BUSYBOX):
        raise MissingToolError(f"a static {initramfs.BUSYBOX}", hosttools.get("busybox").hint)


def _mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), raw))
    return points


def remove_tree(path: Path) -> None:
    """``rm -rf`` that first detaches anything mounted below ``path`` and never crosses into
    another file system: a crashed mmdebstrap can leave the host's /dev or /proc mounted
    inside a half-built rootfs, and a plain rmtree would then delete device nodes."""
    if not path.exists() and not path.is_symlink():
        return
    real = os.path.realpath(path)
    for point in sorted((m for m in _mountpoints() if m == real or m.startswith(real + "/")),
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True,
                   capture_output=True)


def _size_bytes(size: str) -> int:
    return int(size[:-1]) * (1 << 30 if size.endswith("G") else 1 << 20)


class _Build:
    def __init__(self, recipe: Recipe, digest: str, out: Path):
        self.recipe, self.digest, self.out = recipe, digest, out
        self.rootfs = out / "rootfs"
        self.log_path = out / "build.log"
        self.step = "prepare"
        self.proxy_stats: dict[str, int] = {}

    def progress(self, step: str, within: float, detail: str = "") -> None:
        self.step = step
        start, end = _STEP_SPAN[step]
        events.emit(events.ImageBuildProgress(
            image=self.recipe.name, step=step, fraction=round(start + (end - start) * within, 3),
            detail=detail))

    def fail(self, detail: str) -> ImageBuildError:
        return ImageBuildError(self.recipe.name, self.step, detail)

    def run(self, argv: list[str], on_line: Callable[[str], None] | None = None) -> None:
        """Run a command, its output appended to build.log; failure -> ImageBuildError."""
        tail: collections.deque[str] = collections.deque(maxlen=60)
        with self.log_path.open("a") as log:
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace") as proc:
                assert proc.stdout is not None
                try:
                    for line in proc.stdout:
                        log.write(line)
                        tail.append(line)
                        if on_line:
                            on_line(line)
                except BaseException:
                    # Interrupted: let mmdebstrap undo its mounts before the caller
                    # deletes the build folder.
                    proc.terminate()
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    raise
                rc = proc.wait()
        if rc != 0:
            raise self.fail(f"{shlex.join(argv[:3])}... exited {rc}:\n" + "".join(tail))

    # -- 1. root filesystem --------------------------------------------------------------

    def sources(self, upstreams: dict[str, str]) -> list[str]:
        suite = self.recipe.suite
        base = f"http://{APT_PSEUDO_HOST}"
        lines = [f"deb {base}/debian {suite} main"]
        if suite not in UNSTABLE_SUITES:
            lines.append(f"deb {base}/debian {suite}-updates main")
            if SECURITY in upstreams:
                lines.append(f"deb {base}/{SECURITY} {suite}-security main")
        return lines

    def mmdebstrap(self, upstreams: dict[str, str]) -> None:
        self.progress("mmdebstrap", 0.0,
                      f"{self.recipe.suite}: {len(self.recipe.packages)} packages")
        packages = list(dict.fromkeys([*REQUIRED_PACKAGES, *self.recipe.packages]))
        hook = self.out / "kernel-hook.sh"
        hook.write_text(_KERNEL_HOOK.format(meta=KERNEL_METAPACKAGE))
        proxy = AptProxy(config.cache_dir() / "apt-cache", upstreams)

        def on_line(line: str) -> None:
            for marker, within in _MMDEBSTRAP_PHASES:
                if line.startswith("I: ") and marker in line:
                    self.progress("mmdebstrap", within, line[3:].strip())

        with proxy.loopback() as port:
            self.run([
                # mmdebstrap mounts /proc, /sys and /dev into the root it builds. In a
                # private mount namespace those mounts end with its last process even when
                # it dies uncleanly (its reader killed: SIGPIPE mid-way left them mounted
                # under the build folder, where a host-wide walk then read /proc/kmsg and
                # hung), and the parent-death signal stops it when our process dies.
                "setpriv", "--pdeathsig", "TERM", "unshare", "--mount", "--propagation",
                "private", "--",
                "mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
                f"--include={','.join(packages)}",
                f'--aptopt=Acquire::http::Proxy "http://127.0.0.1:{port}"',
                '--aptopt=Acquire::Languages "none"',
                # Docs and man pages are dead weight in a throw-away VM; this stays in the
                # image (dpkg.cfg.d) so later installs skip them too. Copyrights stay.
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--skip=cleanup/apt/lists",
                f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\"",
                self.recipe.suite, str(self.rootfs), *self.sources(upstreams),
            ], on_line=on_line)
        hook.unlink()
        self.proxy_stats = dict(proxy.stats)

    # -- 2. kernel -----------------------------------------------------------------------

    def kernel(self) -> tuple[str, Path]:
        self.progress("kernel", 0.0)
        staging = self.rootfs / "var/tmp/antrieb-kernel"
        debs = sorted(staging.glob("*.deb"))
        if len(debs) != 1:
            raise self.fail(f"expected one kernel package in {staging}, found {debs}")
        self.progress("kernel", 0.2, debs[0].name)
        # --keep-directory-symlink: /lib is a symlink to usr/lib on merged-/usr systems
        # and must stay one when a bookworm kernel package unpacks into /lib/modules.
        with self.log_path.open("a") as log:
            unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                                      stdout=subprocess.PIPE, stderr=log)
            tar = subprocess.run(["tar", "-x", "-C", str(self.rootfs), "--keep-directory-symlink"],
                                 stdin=unpack.stdout, stderr=log)
            assert unpack.stdout is not None
            unpack.stdout.close()
            if unpack.wait() != 0 or tar.returncode != 0:
                raise self.fail(f"unpacking {debs[0].name} failed (see {self.log_path})")
        remove_tree(staging)
        kernels = sorted((self.rootfs / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise self.fail(f"expected one vmlinuz in /boot, found {[k.name for k in kernels]}")
        version = kernels[0].name.removeprefix("vmlinuz-")
        if not (self.rootfs / "lib/modules" / version).is_dir():
            raise self.fail(f"kernel {version} has no /lib/modules/{version}")
        self.progress("kernel", 0.5, f"depmod {version}")
        self.run(["depmod", "-b", str(self.rootfs), version])
        kernel = self.out / "vmlinuz"
        shutil.copyfile(kernels[0], kernel)
        return version, kernel

    # -- 3. fit the rootfs for antrieb ----------------------------------------------------

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        path = self.rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text)
        path.chmod(mode)

    def symlink(self, rel: str, target: str) -> None:
        path = self.rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)

    def customize(self, upstreams: dict[str, str]) -> None:
        self.progress("customize", 0.0)
        apt_conf = self.rootfs / "etc/apt/apt.conf.d"
        (apt_conf / "99mmdebstrap").unlink(missing_ok=True)  # the build's loopback proxy
        self.write("etc/apt/apt.conf.d/00antrieb-proxy",
                   f'Acquire::http::Proxy "http://{GATEWAY_IP}:{PROXY_PORT}";\n'
                   'Acquire::Languages "none";\n')
        self.write("usr/local/lib/antrieb/agent.py", AGENT.read_text(), 0o755)
        # Static: one binary for every suite, whatever libc the guest has.
        self.run(["gcc", "-O2", "-static", "-s", "-o",
                  str(self.rootfs / "usr/local/lib/antrieb/agentd"), str(AGENTD_SOURCE)])
        self.write("etc/systemd/system/antrieb-agent.service", AGENT_SERVICE.read_text())
        self.symlink("etc/systemd/system/multi-user.target.wants/antrieb-agent.service",
                     "/etc/systemd/system/antrieb-agent.service")
        for unit in MASKED_UNITS:
            self.symlink(f"etc/systemd/system/{unit}", "/dev/null")
        for generator in MASKED_GENERATORS:
            self.symlink(f"etc/systemd/system-generators/{generator}", "/dev/null")
        # Every VM shares the image's host key (clones share everything anyway); clients
        # are told not to check it. One ed25519 key: sshd start-up is emulated work.
        for key in (self.rootfs / "etc/ssh").glob("ssh_host_*_key*"):
            if not key.name.startswith("ssh_host_ed25519_key"):
                key.unlink()
        # Logs in RAM: nothing to flush to disk at boot, no writes into clone overlays.
        self.write("etc/systemd/journald.conf.d/antrieb.conf", "[Journal]\nStorage=volatile\n")
        # The cluster's key and /etc/hosts live in tmpfs (/run/antrieb), written by the
        # agent when a clone starts: tmpfs writes are cheap in a freshly restored VM.
        self.write("etc/ssh/sshd_config.d/antrieb.conf",
                   "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                   "UseDNS no\n"
                   "AuthorizedKeysFile .ssh/authorized_keys /run/antrieb/authorized_keys\n")
        if self.recipe.suite == "bookworm":
            # OpenSSH 9.2 re-executes itself for every connection: in an emulated clone
            # that is a fresh process image to translate (~0.3 s before the banner).
            # Later releases split sshd differently and dropped -r.
            self.write("etc/systemd/system/ssh.service.d/antrieb.conf",
                       "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -r $SSHD_OPTS\n")
        identities = "".join(f"    IdentityFile ~/.ssh/id_{k}\n"
                             for k in ("ed25519", "ecdsa", "rsa"))
        # Host keys are checked as on any server: every node has its own, and the agent
        # writes the cluster's known_hosts (each node's name and address with its key).
        self.write("etc/ssh/ssh_config.d/antrieb.conf",
                   "Host *\n    GlobalKnownHostsFile /run/antrieb/known_hosts "
                   "/etc/ssh/ssh_known_hosts\n    StrictHostKeyChecking yes\n"
                   "    LogLevel ERROR\n" + identities
                   + "    IdentityFile /run/antrieb/id_ed25519\n")
        (self.rootfs / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
        (self.rootfs / "root/.ssh").chmod(0o700)
        # The initramfs mounts /dev/vda rw. An fstab line for / would make systemd wait
        # for a dev-vda.device that, without udev, never shows up.
        self.write("etc/fstab", "# / is /dev/vda (ext4), mounted rw by antrieb's initramfs\n")
        self.write("etc/resolv.conf", "")  # no DNS in a cluster: names come from /etc/hosts
        self.write("etc/hostname", "antrieb\n")
        (self.rootfs / "etc/hosts").unlink(missing_ok=True)
        self.symlink("etc/hosts", "/run/antrieb/hosts")
        # A set machine-id avoids systemd's first-boot path (presets, firstboot).
        self.write("etc/machine-id", os.urandom(16).hex() + "\n", 0o444)
        self.check_no_mirror_names(upstreams)
        # ConditionNeedsUpdate units (ldconfig, catalog update...) would run at first
        # boot because /usr is newer than these stamps; dpkg already did their work.
        now = time.time()
        for stamp in ("etc/.updated", "var/.updated"):
            self.write(stamp, f"TIMESTAMP_NSEC={int(now * 1e9)}\n")
            os.utime(self.rootfs / stamp, (now + 1, now + 1))

    def check_no_mirror_names(self, upstreams: dict[str, str]) -> None:
        """The image must name only the pseudo host: its apt goes through the cluster proxy."""
        hosts = {urlsplit(u).hostname for u in upstreams.values()} - {None}
        for path in (self.rootfs / "etc/apt").rglob("*"):
            if path.is_file() and not path.is_symlink():
                text = path.read_text(errors="replace")
                leaked = [h for h in hosts if h and h in text]
                if leaked:
                    rel = path.relative_to(self.rootfs)
                    raise self.fail(f"{rel} names the mirror host {leaked}")

    # -- 4./5. initramfs and disk --------------------------------------------------------

    def initrd(self, version: str) -> tuple[Path, list[str]]:
        self.progress("initramfs", 0.0)
        out = self.out / "initrd.img"
        try:
            modules = initramfs.build_initramfs(self.rootfs, version, out)
        except KeyError as exc:
            raise self.fail(f"kernel {version} has no module or built-in {exc}") from None
        except (OSError, subprocess.CalledProcessError) as exc:
            raise self.fail(f"{type(exc).__name__}: {exc}") from None
        return out, modules

    def disk(self) -> Path:
        self.progress("disk", 0.0, f"mkfs.ext4 {self.recipe.disk_size}")
        disk = self.out / "disk.raw"
        with disk.open("wb") as f:
            f.truncate(_size_bytes(self.recipe.disk_size))  # sparse: only used blocks cost
        self.run(["mkfs.ext4", "-q", "-F", "-L", "antrieb-root", "-d", str(self.rootfs),
                  "-E", "root_owner=0:0", str(disk)])
        return disk


def build_into(recipe: Recipe, digest: str, out: Path) -> ImageArtifacts:
    """Build ``recipe`` into the empty folder ``out`` (created); returns its artefacts.

    The caller renames ``out`` into the cache and removes it on failure.
    """
    started = time.monotonic()
    out.mkdir(parents=True)
    b = _Build(recipe, digest, out)
    upstreams = debian_upstreams()
    try:
        b.mmdebstrap(upstreams)
        version, kernel = b.kernel()
        b.customize(upstreams)
        initrd, modules = b.initrd(version)
        disk = b.disk()
    except OSError as exc:  # our own file handling; tool failures are already wrapped
        raise b.fail(f"{type(exc).__name__}: {exc}") from exc
    b.progress("disk", 0.9, "removing the build's rootfs")
    remove_tree(b.rootfs)
    art = ImageArtifacts(
        name=recipe.name, content_hash=digest, dir=out, kernel=kernel, initrd=initrd, disk=disk,
        kernel_version=version, suite=recipe.suite, packages=list(recipe.packages),
        modules=modules, built_at=time.time(), build_seconds=round(time.monotonic() - started, 1))
    art.write_manifest()
    stats = b.proxy_stats
    b.progress("disk", 1.0, f"built in {art.build_seconds:.0f}s; apt cache: "
               f"{stats['hits']} hits, {stats['misses']} misses")
    return art

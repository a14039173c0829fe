"""Domain XML for the libvirt driver, and clone save images: pure functions of their input.

libvirt refuses the microvm machine ("No PCI buses available"), so a domain is q35 with
virtio-pci devices and direct kernel boot from the same image artefacts as the qemu
driver. What makes that come up fast under TCG (probe boots, CPU seconds of QEMU,
busy 2-core host): qboot instead of SeaBIOS as firmware (-1 s CPU), every device an
integrated endpoint on pcie.0 instead of behind libvirt's default pcie-root-ports (less
PCI enumeration, -0.3 s), no option ROM, no USB, no VGA, no balloon.

Clones: ``virDomainRestoreFlags`` checks the new XML against the saved one for ABI
stability, and the UUID is part of that check ("Target domain uuid ... does not match
source"); one libvirt driver cannot hold two domains with one UUID. So libvirt's restore
gives one clone per save image, never four. A clone therefore gets its own save image:
libvirt's documented on-disk header (``qemu_saveimage.h``: magic, version, data length,
was-running, format, cookie offset) carrying the clone's own XML (name, UUID, overlay,
tap, sockets, metadata), followed byte for byte by the golden's QEMU state stream. It is
fed through a FIFO, so nothing is copied to disk.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from antrieb.vm.qemu.argv import VIRTIO_NET_OFF

NAMESPACE = "https://antrieb.dev/xmlns/libvirt/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NET_OVERRIDES = "".join(f"<qemu:property name='{name}' type='bool' value='false'/>"
                        for name in VIRTIO_NET_OFF)
QBOOT = "/usr/share/qemu/qboot.rom"
RAM_BLOCK = "antrieb-ram"  # the memory backend's id: the RAM block's name in a stream
SAVE_MAGIC = b"LibvirtQemudSave"
SAVE_VERSION = 2
# magic[16], version, data_len, was_running, format, cookieOffset, unused[14]
SAVE_HEADER = struct.Struct("<16s5I56x")


@dataclass(frozen=True, kw_only=True)
class DomainSpec:
    """One libvirt domain: everything that goes into its XML."""

    name: str
    uuid: str
    kernel: str
    initrd: str
    append: str
    accel: str  # "kvm" or "tcg"
    mem_mb: int = 512
    cpus: int = 1
    disk: str  # a qcow2 overlay (on the golden's disk, or on the image's raw disk)
    mac: str
    tap: str
    tap_managed: bool = False  # libvirt creates the tap (a libvirtd in another namespace)
    agent_socket: str
    console: str
    cluster: str = ""
    role: str = ""
    firmware: str | None = QBOOT
    # Guest RAM in this file instead of anonymous memory: the golden's mapping is shared
    # (the file holds its RAM when it is saved), a clone's private (copy-on-write).
    ram_file: str = ""
    ram_shared: bool = False

    def domain_name(self) -> str:
        # Prefixed, so that on a shared libvirtd the domains say whose they are.
        return f"antrieb-{self.cluster}-{self.name}" if self.cluster else f"antrieb-{self.name}"


# Not xml.sax.saxutils: it imports urllib.request, http.client and email, ~25 ms of the
# libvirt supervisor's start that every Cluster.up() waits for.
def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    value = escape(value)
    for char, ref in (('"', "&quot;"), ("\n", "&#10;"), ("\r", "&#13;"), ("\t", "&#9;")):
        value = value.replace(char, ref)
    return f'"{value}"'


def domain_xml(spec: DomainSpec) -> str:
    """The domain XML; the same device layout for a golden and all its clones (a restore
    needs the exact machine that was saved)."""
    loader = f"<loader type='rom'>{escape(spec.firmware)}</loader>" if spec.firmware else ""
    dom_type = "kvm" if spec.accel == "kvm" else "qemu"
    cpu = "<cpu mode='host-passthrough'/>" if spec.accel == "kvm" else "<cpu mode='maximum'/>"
    managed = "yes" if spec.tap_managed else "no"

    def pci(slot: int) -> str:
        return f"<address type='pci' domain='0' bus='0' slot='{slot}' function='0'/>"

    return f"""<domain type='{dom_type}' xmlns:qemu='{QEMU_NS}'>
  <name>{escape(spec.domain_name())}</name>
  <uuid>{escape(spec.uuid)}</uuid>
  <metadata>
    <antrieb:node xmlns:antrieb='{NAMESPACE}'>
      <antrieb:cluster>{escape(spec.cluster)}</antrieb:cluster>
      <antrieb:name>{escape(spec.name)}</antrieb:name>
      <antrieb:role>{escape(spec.role)}</antrieb:role>
    </antrieb:node>
  </metadata>
  <memory unit='MiB'>{spec.mem_mb}</memory>
  <vcpu>{spec.cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    {loader}
    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{escape(spec.append)}</cmdline>
  </os>
  <features><acpi/></features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>
      <source file={_attr(spec.disk)}/>
      <target dev='vda' bus='virtio'/>
      {pci(3)}
    </disk>
    <interface type='ethernet'>
      <mac address={_attr(spec.mac)}/>
      <target dev={_attr(spec.tap)} managed='{managed}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
      <alias name='ua-net0'/>
      {pci(2)}
    </interface>
    <controller type='virtio-serial' index='0'>{pci(4)}</controller>
    <channel type='unix'>
      <source mode='bind' path={_attr(spec.agent_socket)}/>
      <target type='virtio' name='agent'/>
    </channel>
    <serial type='file'>
      <source path={_attr(spec.console)}/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  {_ram_file_args(spec)}
  <qemu:override>
    <qemu:device alias='ua-net0'>
      <qemu:frontend>{NET_OVERRIDES}</qemu:frontend>
    </qemu:device>
  </qemu:override>
</domain>
"""


def _ram_file_args(spec: DomainSpec) -> str:
    """libvirt 9 puts guest RAM in files only under its own memory_backing_dir, named
    by the domain's ID: our own backend (appended -machine options override libvirt's;
    libvirt's pc.ram backend stays unused and is never migrated)."""
    if not spec.ram_file:
        return ""
    backend = json.dumps({"qom-type": "memory-backend-file", "id": RAM_BLOCK,
                          "size": spec.mem_mb << 20, "mem-path": spec.ram_file,
                          "share": spec.ram_shared})
    args = ["-object", backend, "-machine", f"memory-backend={RAM_BLOCK}"]
    return ("<qemu:commandline>"
            + "".join(f"<qemu:arg value={_attr(a)}/>" for a in args)
            + "</qemu:commandline>")


def kernel_append(base: str) -> str:
    # PCI NICs get "predictable" names (enp0s2) from udev; the agent and the golden's
    # network config speak of eth0, as on microvm.
    return f"{base} net.ifnames=0"


@dataclass(frozen=True)
class SaveHeader:
    version: int
    data_len: int
    was_running: int
    format: int
    cookie_offset: int
    xml: bytes
    cookie: bytes

    @property
    def stream_offset(self) -> int:
        """Where QEMU's own migration stream starts in the file."""
        return SAVE_HEADER.size + self.data_len


def read_save_header(head: bytes) -> SaveHeader:
    """Parse the start of a libvirt QEMU save image (at least header + data)."""
    if len(head) < SAVE_HEADER.size:
        raise ValueError("not a libvirt save image: too short")
    magic, version, data_len, running, fmt, cookie_off = SAVE_HEADER.unpack_from(head)
    if magic != SAVE_MAGIC:
        raise ValueError(f"not a complete libvirt save image (magic {magic!r})")
    if version != SAVE_VERSION:
        raise ValueError(f"libvirt save image version {version}, expected {SAVE_VERSION}")
    if fmt != 0:
        raise ValueError("compressed save image: clones need the raw format")
    data = head[SAVE_HEADER.size:SAVE_HEADER.size + data_len]
    if len(data) != data_len:
        raise ValueError("libvirt save image header cut short")
    xml = data.split(b"\0", 1)[0]
    cookie = data[cookie_off:].split(b"\0", 1)[0] if cookie_off else b""
    return SaveHeader(version, data_len, running, fmt, cookie_off, xml, cookie)


def clone_save_header(golden: SaveHeader, xml: str) -> bytes:
    """The header and data of a clone's save image: the golden's, with the clone's XML.
    The golden's QEMU stream follows it unchanged."""
    xml_bytes = xml.encode() + b"\0"
    data = xml_bytes + (golden.cookie + b"\0" if golden.cookie else b"")
    cookie_offset = len(xml_bytes) if golden.cookie else 0
    return SAVE_HEADER.pack(SAVE_MAGIC, golden.version, len(data), golden.was_running,
                            golden.format, cookie_offset) + data

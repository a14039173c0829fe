"""libvirt domain XML and clone save images: pure functions, no libvirt needed."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import pytest

from antrieb.errors import MissingToolError
from antrieb.vm.libvirt.xml import (
    NAMESPACE,
    RAM_BLOCK,
    SAVE_HEADER,
    SAVE_MAGIC,
    DomainSpec,
    clone_save_header,
    domain_xml,
    kernel_append,
    read_save_header,
)


def spec(**kw) -> DomainSpec:
    base = dict(name="node1", uuid="0b7d1a8e-7c0f-4c59-9a55-5d2b9b0e0c01", kernel="/k/vmlinuz",
                initrd="/k/initrd.img", append="console=ttyS0 net.ifnames=0", accel="tcg",
                disk="/run/node1.qcow2", mac="52:54:00:77:00:0b", tap="tap0",
                agent_socket="/run/node1.agent", console="/run/node1.console",
                cluster="c0ffee", role="db")
    return DomainSpec(**{**base, **kw})


def test_q35_direct_kernel_boot_with_qboot_and_flat_pci():
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"  # TCG
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os/loader").text.endswith("qboot.rom")
    assert root.find("os/kernel").text == "/k/vmlinuz"
    assert root.find("os/cmdline").text == "console=ttyS0 net.ifnames=0"
    buses = {a.get("bus") for a in root.iter("address")}
    assert buses == {"0"}, "every device an integrated endpoint on pcie.0"
    assert root.find("devices/interface/rom").get("enabled") == "no"
    assert root.find("devices/memballoon").get("model") == "none"
    assert root.find("devices/controller[@type='usb']").get("model") == "none"
    # QEMU runs as root without relabelling the shared image artefacts, on any libvirtd
    label = root.find("seclabel")
    assert (label.get("model"), label.get("relabel"), label.find("label").text) == \
        ("dac", "no", "+0:+0")


def test_identity_and_metadata_of_a_clone():
    root = ET.fromstring(domain_xml(spec()))
    assert root.find("name").text == "antrieb-c0ffee-node1"
    meta = root.find(f"metadata/{{{NAMESPACE}}}node")
    assert meta.find(f"{{{NAMESPACE}}}cluster").text == "c0ffee"
    assert meta.find(f"{{{NAMESPACE}}}role").text == "db"
    iface = root.find("devices/interface")
    assert iface.find("target").get("dev") == "tap0"
    assert iface.find("target").get("managed") == "no"
    assert iface.find("mac").get("address") == "52:54:00:77:00:0b"
    assert root.find("devices/channel/target").get("name") == "agent"
    assert root.find("devices/disk/source").get("file") == "/run/node1.qcow2"


def test_kvm_and_escaping():
    root = ET.fromstring(domain_xml(spec(accel="kvm", role="a<b&'c\"", firmware=None)))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("os/loader") is None
    assert root.find(f"metadata/{{{NAMESPACE}}}node/{{{NAMESPACE}}}role").text == "a<b&'c\""


def test_attributes_keep_every_character():
    odd = "/run/a\"b'c<d>&e\tf\ng\rh"
    root = ET.fromstring(domain_xml(spec(disk=odd, tap="t'\"")))
    assert root.find("devices/disk/source").get("file") == odd
    assert root.find("devices/interface/target").get("dev") == "t'\""


def test_virtio_net_without_control_queue_like_the_qemu_driver():
    # Without a control queue the guest changes its MAC at once instead of spinning on a
    # control command while 4 clones share 2 cores; no announce after the restore.
    root = ET.fromstring(domain_xml(spec()))
    qemu = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    alias = root.find("devices/interface/alias").get("name")
    device = root.find(f"{qemu}override/{qemu}device")
    assert device.get("alias") == alias
    props = {p.get("name"): p.get("value") for p in device.iter(f"{qemu}property")}
    assert props["ctrl_vq"] == props["guest_announce"] == "false"
    assert all(p.get("type") == "bool" for p in device.iter(f"{qemu}property"))


def test_ram_in_the_golden_file_shared_for_the_golden_private_for_clones():
    import json

    qemu = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    assert ET.fromstring(domain_xml(spec())).find(f"{qemu}commandline") is None
    for shared in (True, False):
        root = ET.fromstring(domain_xml(spec(ram_file="/g/it's \"ram\"", ram_shared=shared)))
        args = [a.get("value") for a in root.iter(f"{qemu}arg")]
        assert args[0] == "-object" and args[2:] == ["-machine", f"memory-backend={RAM_BLOCK}"]
        backend = json.loads(args[1])
        assert backend == {"qom-type": "memory-backend-file", "id": RAM_BLOCK,
                           "size": 512 << 20, "mem-path": "/g/it's \"ram\"", "share": shared}


def test_golden_and_clone_have_the_same_machine():
    # a restore needs the saved machine: only names, paths and identity may differ
    a = domain_xml(spec())
    b = domain_xml(spec(name="node2", uuid="x", disk="/o", tap="tap1", agent_socket="/a",
                        console="/c", mac="52:54:00:77:00:0c"))
    strip = lambda x: [ln for ln in x.splitlines()  # noqa: E731
                       if not any(k in ln for k in ("name", "uuid", "file=", "dev=", "path=",
                                                    "address="))]
    assert strip(a) == strip(b)


def test_kernel_append_names_eth0():
    assert kernel_append("console=ttyS0").endswith("net.ifnames=0")


def golden_image(xml: bytes = b"<domain>golden</domain>", cookie: bytes = b"<cookie/>",
                 pad: int = 4096, stream: bytes = b"QEVM\0\0\0\3rest-of-stream") -> bytes:
    data = bytearray(xml + b"\0" + cookie + b"\0")
    cookie_off = len(xml) + 1
    data += b"\0" * pad
    return SAVE_HEADER.pack(SAVE_MAGIC, 2, len(data), 1, 0, cookie_off) + bytes(data) + stream


def test_save_header_round_trip_and_clone():
    image = golden_image()
    head = read_save_header(image)
    assert head.xml == b"<domain>golden</domain>" and head.cookie == b"<cookie/>"
    assert image[head.stream_offset:].startswith(b"QEVM")
    clone = clone_save_header(head, "<domain>node1 ✓</domain>") + image[head.stream_offset:]
    again = read_save_header(clone)
    assert again.xml.decode() == "<domain>node1 ✓</domain>"
    assert again.cookie == b"<cookie/>" and again.was_running == 1
    assert clone[again.stream_offset:] == image[head.stream_offset:]


@pytest.mark.parametrize("bad,message", [
    (b"short", "too short"),
    (b"LibvirtQemudPart" + golden_image()[16:], "not a complete"),
    (golden_image()[:16] + (3).to_bytes(4, "little") + golden_image()[20:], "version 3"),
])
def test_bad_save_images_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        read_save_header(bad)


def test_missing_libvirt_python_is_an_install_hint(monkeypatch):
    from antrieb.vm.driver import get_driver

    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt -> ImportError
    with pytest.raises(MissingToolError, match=r"antrieb\[libvirt\]"):
        get_driver("libvirt")

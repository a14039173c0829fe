"""Per-node images: a debian-13 node, and an Ansible control node that manages the
others over the cluster's passwordless SSH."""

from __future__ import annotations


def test_ansible_control_node_manages_debian_12_and_13(cluster_factory):
    cluster = cluster_factory(nodes=[
        {"name": "control", "role": "control", "image": "debian-12-ansible"},
        {"name": "old", "role": "managed", "image": "debian-12"},
        {"name": "new", "role": "managed", "image": "debian-13"},
    ])
    releases = cluster.run_all(". /etc/os-release && echo $VERSION_CODENAME", timeout=60)
    assert {k: v.stdout.strip() for k, v in releases.items()} == {
        "control": "bookworm", "old": "bookworm", "new": "trixie"}
    r = cluster["control"].run(
        "ANSIBLE_HOST_KEY_CHECKING=False ansible all -i old,new, -m ping -o", timeout=240)
    assert r.ok, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == 2, r.stdout
    assert cluster["new"].run("ssh -o BatchMode=yes old hostname", timeout=90).stdout.strip() \
        == "old"

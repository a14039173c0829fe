"""Every clone is a freshly installed server of its own: its machine-id, its SSH host
key (checked by the other nodes and by us), empty apt lists; and a reboot is real."""

from __future__ import annotations

import pytest

from .conftest import ALL_DRIVERS

each_driver = pytest.mark.parametrize("driver_variant", ALL_DRIVERS, indirect=True)


@pytest.mark.vm
@pytest.mark.parametrize("driver_variant", ["qemu", "libvirt-embed"], indirect=True)
def test_clones_differ_in_machine_id_and_host_key_and_trust_each_other(cluster_factory):
    cluster = cluster_factory(nodes=2)
    facts = cluster.run_all("cat /etc/machine-id; cut -d' ' -f2 "
                            "/etc/ssh/ssh_host_ed25519_key.pub", timeout=60)
    (mid1, key1), (mid2, key2) = (facts[n].stdout.split() for n in ("node1", "node2"))
    assert mid1 != mid2 and key1 != key2
    assert mid1 == cluster.machine_ids["node1"] and len(mid1) == 32
    # the sshd serves the node's own key (reloaded when the clone started), and a node
    # checks it against the cluster's known_hosts: by name and by address, no prompt
    for src, dst in (("node1", "node2"), ("node2", "node1")):
        for target in (dst, cluster[dst].ip):
            r = cluster[src].run(f"ssh -o BatchMode=yes {target} "
                                 "\"cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub\"",
                                 timeout=60)
            assert r.ok, r
            assert r.stdout.split() == [key2 if dst == "node2" else key1]
    # an unknown key is refused, as on any server with host key checking
    bad = cluster["node1"].run("ssh -o BatchMode=yes -o GlobalKnownHostsFile=/dev/null "
                               "-o UserKnownHostsFile=/dev/null node2 true", timeout=60)
    assert not bad.ok and "Host key verification failed" in bad.stderr, bad


@pytest.mark.vm
def test_apt_lists_are_empty_as_on_a_fresh_install(cluster_factory):
    cluster = cluster_factory(nodes=1)
    node = cluster["node1"]
    lists = node.run("find /var/lib/apt/lists -type f ! -name lock | wc -l", timeout=60)
    assert lists.stdout.strip() == "0", lists
    r = node.run("apt-get install -y nginx", timeout=120)
    assert r.exit_status == 100, r
    assert "Unable to locate package nginx" in r.stderr, r
    r = node.run("apt-get update -q && apt-get install -y -q --no-install-recommends hello "
                 "&& hello", timeout=300)
    assert r.ok and "Hello, world!" in r.stdout, r


@pytest.mark.vm
@each_driver
def test_a_reboot_boots_the_node_again_from_its_own_disk(cluster_factory):
    cluster = cluster_factory(nodes=2)
    before = cluster.run_all("cat /proc/sys/kernel/random/boot_id; cat /etc/machine-id; "
                             "echo kept > /root/on-disk; sysctl -w vm.swappiness=7 >/dev/null",
                             timeout=60)
    seconds = cluster.reboot()
    print(f"reboot to sshd answering, per node: {seconds}")
    assert set(seconds) == {"node1", "node2"}
    after = cluster.run_all("cat /proc/sys/kernel/random/boot_id; cat /etc/machine-id; "
                            "cat /root/on-disk; sysctl -n vm.swappiness; hostname; "
                            "ip -4 -o addr show eth0 | awk '{print $4}'; ssh node2 hostname",
                            timeout=120)
    for name in ("node1", "node2"):
        old_boot, mid = before[name].stdout.split()
        boot, mid_after, kept, swappiness, host, cidr, peer = after[name].stdout.split()
        assert boot != old_boot, "the kernel did not boot again"
        assert mid_after == mid and kept == "kept" and host == name
        assert cidr == f"{cluster[name].ip}/24" and peer == "node2"
        assert swappiness != "7", "a runtime-only setting survived: that was no reboot"

"""Bad cluster input is refused before anything starts, with a clear message."""

from __future__ import annotations

import pytest

from antrieb import config
from antrieb.cluster import Cluster, NodeSpec
from antrieb.errors import (
    ConfigError,
    InvalidNameError,
    TooManyNodesError,
    UnknownImageError,
)
from antrieb.nodespec import as_specs as _as_specs
from antrieb.vm.net import plan as netplan


class NoDriver:
    """Stands in for a VM driver where none may be touched: any call is a test failure."""

    name = accel = accel_reason = "none"

    def __getattr__(self, item):
        raise AssertionError(f"driver.{item} called: input checks must come first")


def test_more_than_four_nodes_is_refused():
    with pytest.raises(TooManyNodesError, match="at most 4 nodes, 5 were asked"):
        Cluster(nodes=5, driver=NoDriver())
    with pytest.raises(TooManyNodesError):
        Cluster(nodes=[f"n{i}" for i in range(5)], driver=NoDriver())


@pytest.mark.parametrize("nodes", [0, -1, [], True, "three", 2.5])
def test_nonsense_node_counts_are_refused(nodes):
    with pytest.raises(ConfigError):
        Cluster(nodes=nodes, driver=NoDriver())


def test_unknown_image_names_the_known_ones():
    with pytest.raises(UnknownImageError) as info:
        Cluster(nodes=2, image="windows-95", driver=NoDriver())
    assert "debian-12" in str(info.value)
    assert "windows-95" in str(info.value)


def test_unknown_image_in_one_node_spec():
    with pytest.raises(UnknownImageError):
        Cluster(nodes=[{"name": "web", "image": "debian-12"},
                       {"name": "db", "image": "nope"}], driver=NoDriver())


@pytest.mark.parametrize("name", ["Web", "1node", "no_underscore", "-x", "a" * 64, "", "golden",
                                  "localhost", "x y", "ümlaut"])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidNameError):
        Cluster(nodes=[name], driver=NoDriver())


def test_duplicate_names_are_refused():
    with pytest.raises(InvalidNameError, match="web repeated"):
        Cluster(nodes=["web", "web"], driver=NoDriver())


def test_bad_memory_and_cpus():
    with pytest.raises(ConfigError, match="memory"):
        Cluster(nodes=1, memory=64, driver=NoDriver())
    with pytest.raises(ConfigError, match="cpus"):
        Cluster(nodes=1, cpus=0, driver=NoDriver())


def test_plans_have_distinct_addresses_and_a_shared_hosts_file():
    cluster = Cluster(nodes=[NodeSpec(name="lb", role="lb"), {"name": "web1", "role": "web"},
                             "web2"], driver=NoDriver())
    ips = [p.ip for p in cluster.plans]
    macs = [p.mac for p in cluster.plans]
    assert len(set(ips)) == len(set(macs)) == 3
    assert netplan.GATEWAY_IP not in ips
    assert [p.role for p in cluster.plans] == ["lb", "web", "node"]
    hosts = cluster.hosts_file()
    for p in cluster.plans:
        assert f"{p.ip} {p.name}\n" in hosts
    assert repr(cluster).startswith(f"<Cluster {cluster.id} new")


def test_state_is_checked():
    from antrieb.errors import StateError

    cluster = Cluster(nodes=1, driver=NoDriver())
    with pytest.raises(StateError, match="new"):
        cluster.run_all("true")
    cluster.down()  # down before up is allowed and final
    assert cluster.state.value == "down"


def test_counts_default_names():
    assert [s.name for s in _as_specs(3, "debian-12")] == ["node1", "node2", "node3"]
    assert config.MAX_NODES == 4


def test_unknown_spec_keys_are_refused():
    with pytest.raises(ConfigError, match="colour"):
        Cluster(nodes=[{"name": "web", "colour": "blue"}], driver=NoDriver())

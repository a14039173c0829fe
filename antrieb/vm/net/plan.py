"""The address plan every cluster shares.

Each cluster lives in its own network namespace, so every cluster can use the same
private subnet without seeing another. The golden VM is snapshotted with this plan
baked in (gateway, apt proxy address), so clones only need their own IP and MAC.
"""

from __future__ import annotations

import ipaddress

SUBNET = ipaddress.ip_network("10.77.0.0/24")
PREFIX = SUBNET.prefixlen
GATEWAY_IP = "10.77.0.1"  # the bridge inside the namespace; the apt proxy listens here
PROXY_PORT = 3142
GOLDEN_IP = "10.77.0.10"
FIRST_NODE_HOST = 11  # node i (0-based) gets 10.77.0.(11 + i)
GUEST_DEV = "eth0"
# apt inside a VM asks the proxy for http://apt.antrieb/<archive>/...; the proxy maps
# <archive> to the mirror this host's apt sources name. No mirror name is baked into images.
APT_PSEUDO_HOST = "apt.antrieb"


def node_ip(index: int) -> str:
    return str(SUBNET.network_address + FIRST_NODE_HOST + index)


def node_mac(index: int) -> str:
    return f"52:54:00:77:00:{FIRST_NODE_HOST + index:02x}"


GOLDEN_MAC = "52:54:00:77:00:0a"

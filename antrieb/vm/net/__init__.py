"""A cluster's network: the address plan every cluster shares
(:mod:`~antrieb.vm.net.plan`), its private namespaces with a bridge and one tap per VM
(:mod:`~antrieb.vm.net.namespaces`), and its only way out, the caching apt proxy
(:mod:`~antrieb.vm.net.aptproxy`, :mod:`~antrieb.vm.net.aptcache`) to the host's own
Debian mirror (:mod:`~antrieb.vm.net.mirror`)."""

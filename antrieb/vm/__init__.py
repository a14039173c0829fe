"""The cluster engine below :mod:`antrieb.cluster`: images, VMs, their network.

At this level, what both drivers share: the driver Protocol and its lazy registry
(:mod:`~antrieb.vm.driver`), the plain data a supervisor is told (:mod:`~antrieb.vm.spec`),
the accelerator probe (:mod:`~antrieb.vm.accel`), the per-cluster supervisor process
(:mod:`~antrieb.vm.supervisor`, its client :mod:`~antrieb.vm.supervisor_client`, the
drivers' common part :mod:`~antrieb.vm.supervised`), golden snapshots' common part
(:mod:`~antrieb.vm.golden`) and ``/proc`` readings (:mod:`~antrieb.vm.procfs`).

Below it, a package per concern: :mod:`~antrieb.vm.images`, :mod:`~antrieb.vm.net`,
:mod:`~antrieb.vm.guest`, and one per driver, :mod:`~antrieb.vm.qemu` and
:mod:`~antrieb.vm.libvirt`.
"""

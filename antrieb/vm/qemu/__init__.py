"""The qemu driver: microvm clones restored from golden snapshots.

- :mod:`~antrieb.vm.qemu.argv`: the QEMU command line, a pure function of a VM spec;
- :mod:`~antrieb.vm.qemu.golden`: golden snapshots (RAM in a shared file, device
  state migrated with ``x-ignore-shared``);
- :mod:`~antrieb.vm.qemu.supervisor`: the per-cluster process that starts QEMU;
- :mod:`~antrieb.vm.qemu.driver`: the driver the cluster layer calls.
"""

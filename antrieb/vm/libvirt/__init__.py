"""The libvirt driver: the same clusters as q35 domains through any libvirt URI
(embedded by default). Needs ``libvirt-python`` (``pip install 'antrieb[libvirt]'``),
imported only when this driver is chosen.

- :mod:`~antrieb.vm.libvirt.xml`: domain XML and clone save headers, pure functions;
- :mod:`~antrieb.vm.libvirt.golden`: golden domains saved with ``virDomainSave``, and
  :mod:`~antrieb.vm.libvirt.migration_stream`, which drops their RAM from the save;
- :mod:`~antrieb.vm.libvirt.embed`: the embedded connection and what keeps it cheap;
- :mod:`~antrieb.vm.libvirt.restore`: clones restored from their own save images;
- :mod:`~antrieb.vm.libvirt.supervisor`: the per-cluster process holding the connection;
- :mod:`~antrieb.vm.libvirt.driver`: the driver the cluster layer calls.
"""

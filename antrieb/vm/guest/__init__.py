"""Talking to a running guest: the host side of the guest agent
(:mod:`~antrieb.vm.guest.client`, JSON lines over virtio-serial) and the SSH readiness
probe (:mod:`~antrieb.vm.guest.sshprobe`).

The other files here are not imported on the host; image builds copy them into the
guest: the resident agent (``agentd.c``), its slow path (``agent.py``), its unit, and
the initramfs' ``/init`` (``initramfs-init.sh``).
"""

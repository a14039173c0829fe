"""Output capping keeps memory bounded and says what it dropped."""

from __future__ import annotations

from antrieb.ssh import CappedBuffer, ClusterKey, Result


def test_small_output_is_kept_whole():
    buf = CappedBuffer(100)
    buf.add(b"hello ")
    buf.add(b"world")
    assert buf.text() == "hello world"
    assert not buf.truncated


def test_runaway_output_keeps_head_and_tail_only():
    buf = CappedBuffer(1000)
    for i in range(10_000):
        buf.add(b"y\n" * 50 + str(i).encode() + b"\n")
    assert buf.truncated
    assert len(buf.head) + len(buf.tail) <= 1000
    text = buf.text()
    assert text.startswith("y\ny\n")
    assert text.rstrip().endswith("9999")
    assert "dropped" in text


def test_cluster_key_is_fresh_and_usable():
    a, b = ClusterKey(), ClusterKey()
    assert a.public_openssh != b.public_openssh
    assert a.public_openssh.startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in a.private_openssh
    assert a.pkey.get_base64() == a.public_openssh.split()[1]


def test_result_ok():
    r = Result(node="n", command="true", exit_status=0, stdout="", stderr="", seconds=0.1)
    assert r.ok and "n" in str(r)
    assert not Result(node="n", command="x", exit_status=None, stdout="", stderr="",
                      seconds=1, timed_out=True).ok

"""Facts about processes from /proc: what the drivers use to find their own processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from antrieb.vm.procfs import open_files, pids_in_namespace, stat_fields


def test_stat_fields_survive_a_command_name_with_spaces_and_parens(tmp_path):
    odd = tmp_path / "a) (b c"
    odd.symlink_to(shutil.which("sleep"))
    child = subprocess.Popen([str(odd), "30"])
    try:
        time.sleep(0.2)
        assert "(a) (b c)" in Path(f"/proc/{child.pid}/stat").read_text()
        fields = stat_fields(child.pid)
        assert fields is not None and fields[0] in "RS" and int(fields[1]) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert stat_fields(child.pid) is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a new network namespace needs root and util-linux unshare")
def test_the_processes_of_a_network_namespace_and_no_others():
    child = subprocess.Popen(["unshare", "--net", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{child.pid}/exe").endswith("unshare"):
            assert time.monotonic() < deadline, "unshare did not exec sleep"
            time.sleep(0.01)
        ns = os.readlink(f"/proc/{child.pid}/ns/net")
        assert ns != os.readlink("/proc/self/ns/net")
        assert pids_in_namespace("net", ns) == [child.pid]
        assert os.getpid() in pids_in_namespace("net", os.readlink("/proc/self/ns/net"))
    finally:
        child.kill()
        child.wait()


def test_open_files_below_a_folder_of_any_process(tmp_path):
    (tmp_path / "kept").write_bytes(b"x")
    (tmp_path / "gone").write_bytes(b"x")
    (tmp_path / "closed").write_bytes(b"x")
    with (tmp_path / "kept").open("rb") as kept:
        child = subprocess.Popen(["sleep", "30"], stdin=kept)  # held by another process
    try:
        with (tmp_path / "gone").open("rb"):
            (tmp_path / "gone").unlink()  # a deleted file keeps its old path
            found = open_files(tmp_path)
        assert found >= {str(tmp_path / "kept"), str(tmp_path / "gone")}
        assert str(tmp_path / "closed") not in found
        assert open_files(tmp_path / "elsewhere") == set()
    finally:
        child.kill()
        child.wait()

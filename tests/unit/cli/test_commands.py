"""The command line: JSON for programs, exit codes that mean something."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from antrieb.cli import app

runner = CliRunner()


def test_images_list_json_names_every_recipe():
    result = runner.invoke(app, ["images", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    names = {r["name"] for r in rows}
    assert {"debian-12", "debian-13", "debian-12-ansible"} <= names
    assert all("built" in r for r in rows)


def test_bad_input_exits_2_before_anything_starts():
    result = runner.invoke(app, ["demo", "--nodes", "5"])
    assert result.exit_code == 2
    assert "at most 4 nodes" in result.stderr
    result = runner.invoke(app, ["demo", "--image", "gentoo"])
    assert result.exit_code == 2
    assert "unknown image 'gentoo'" in result.stderr
    result = runner.invoke(app, ["images", "build", "gentoo"])
    assert result.exit_code == 2


def test_doctor_reports_what_it_found():
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 3)
    assert report["accel"]["name"] in {"kvm", "tcg", "unknown"}
    assert report["accel"]["reason"]
    assert {"root", "user_namespaces"} <= set(report["privileges"])
    assert report["free_disk_gb"] > 0
    for tool, package in report["missing"].items():
        assert package in " ".join(report["hints"]), tool


def test_bench_rejects_nonsense_rounds():
    assert runner.invoke(app, ["bench", "cluster", "--rounds", "0"]).exit_code == 2


def test_python_m_runs_the_whole_command():
    """`python -m antrieb` and `python -m antrieb.cli` see every command group."""
    import subprocess
    import sys

    for module in ("antrieb", "antrieb.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        for group in ("examples", "runs", "store", "mcp", "experiment", "bench", "cache"):
            assert group in out.stdout, (module, group, out.stdout)

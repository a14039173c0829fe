"""Benchmark figures: a memory figure that could not be read is None with the reason."""

from __future__ import annotations

from antrieb.bench import _mem_ratio


def test_unread_smaps_is_null_with_a_reason_never_zero():
    out = _mem_ratio({"node1": 0.12, "node2": None})
    assert out["private_mem_ratio"] is None
    assert "smaps_rollup" in out["private_mem_ratio_reason"] and "node2" in \
        out["private_mem_ratio_reason"]
    assert _mem_ratio({})["private_mem_ratio"] is None


def test_read_figures_give_the_largest_ratio():
    assert _mem_ratio({"node1": 0.12, "node2": 0.25}) == {"private_mem_ratio": 0.25}

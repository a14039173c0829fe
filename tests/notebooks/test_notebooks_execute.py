"""Every notebook in notebooks/ executes with papermill in recorded mode (offline, no
VMs), and its outputs carry the live widget and its static HTML copy."""

from __future__ import annotations

from pathlib import Path

import nbconvert
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_offline(path: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    monkeypatch.setenv("ANTRIEB_CACHE", str(tmp_path / "cache"))  # its runs stay here
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"mode": "recorded",
                                                                "speed": 0},
                               cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    book = nbformat.read(out, as_version=4)
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    bundles = [o.data for o in outputs if o.output_type in ("display_data", "execute_result")]
    assert [d for d in bundles if WIDGET in d], "no widget in the outputs"
    # the static copy is the finished run, not the empty widget of the start
    static = [d["text/html"] for d in bundles if "antrieb-static-copy" in d.get("text/html", "")]
    assert static and all("antrieb-timeline" in h and "antrieb-iteration" in h and
                          "antrieb-final" in h for h in static)
    # the widget state is saved with the notebook, so nbconvert can render the widget too
    assert book.metadata.get("widgets", {}).get(
        "application/vnd.jupyter.widget-state+json", {}).get("state")
    # and nbconvert's HTML carries the static copy as markup (read without any script)
    html, _ = nbconvert.HTMLExporter().from_notebook_node(book)
    assert '<div class="antrieb-static-copy">' in html

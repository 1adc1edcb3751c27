"""The walkthrough notebook runs top to bottom, in under a minute, and shows its figures.

It is executed with nbclient on the ``python3`` kernel. jupyter_client starts that kernel with this
interpreter (``sys.executable``) when the spec's command is plain ``python``, which is the spec
ipykernel installs, so ``pip install -e '.[dev]'`` is all CI needs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("notebook")  # both write the repository's results/walkthrough
def test_walkthrough_runs_top_to_bottom_in_under_a_minute():
    """Every cell runs without error, the figures come out as PNGs, and the report is written."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 4  # timeline, ledger, heatmaps, lines
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "goodput" in text and "report.html" in text
    assert elapsed < 60, f"the walkthrough took {elapsed:.0f} s"


@pytest.mark.timeout(180)
@pytest.mark.xdist_group("notebook")  # both write the repository's results/walkthrough
def test_walkthrough_runs_from_its_own_folder():
    """``jupyter execute walkthrough.ipynb`` from notebooks/ works too (the notebook finds the repository)."""
    jupyter = Path(sys.executable).parent / "jupyter"  # installed by .[dev] next to this interpreter
    done = subprocess.run([str(jupyter), "execute", "walkthrough.ipynb"], cwd=ROOT / "notebooks",
                          capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (ROOT / "notebooks" / "results").exists()  # results go to the repository's results/

"""examples/quickstart.ipynb runs end to end (so it never goes stale) and is kept without outputs."""
from __future__ import annotations


import pytest

from tests.helpers import ROOT
from tests.helpers.sweep import store_client, sweep_runs

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def test_the_notebook_is_kept_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]
    assert cells and all(not c.outputs and c.execution_count is None for c in cells)


@pytest.mark.slow  # a Jupyter kernel, a fit and a tracked sweep (about half a minute)
def test_the_quickstart_notebook_runs_end_to_end(tmp_path, store_uri):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the learning curves
    assert (tmp_path / "wine-best" / "params.msgpack").is_file()
    (parent,), children = sweep_runs(store_client(store_uri), "wine-activations")  # in ./mlflow.db
    assert parent.info.status == "FINISHED" and len(children) == 6
    printed = "".join(o.get("text", "") for o in outputs)
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db" in printed

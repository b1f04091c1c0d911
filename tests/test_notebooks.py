"""Every notebook in notebooks/ runs top to bottom in a Jupyter kernel and draws pictures.

Each notebook is executed as a user would run it, with nbclient and ipykernel's ``python3``
kernel (the interpreter running the tests: jupyter_client starts ``python`` kernels with
``sys.executable``, and a first check inside the kernel confirms the environment). A
notebook passes when no cell fails, its outputs hold at least one PNG image and some text,
and it left no file beside it. The copies in the repository are stored without outputs,
execution counts or widget state (a separate, cheap test).

Each kernel runs in a temporary folder, with its own IPython folder (a user's startup
files stay out) and one BLAS/OpenMP thread: under ``pytest -n 2`` two notebooks share the
two cores. The notebooks' own settings keep each under 45 s alone on 2 CPU cores; a cell
gets 120 s.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
CELL_TIMEOUT_S = 120

# Run first in the kernel: the environment it runs in, compared with the tests' own.
WHERE = "import sys; print(sys.prefix); print(sys.executable)"


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {FOLDER}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4, f"{path.name}: nbformat {nb['nbformat']}, expected 4"
    assert "widgets" not in nb["metadata"], f"{path.name}: widget state in its metadata"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: expected the python3 kernel, got {nb['metadata'].get('kernelspec')}")
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell["outputs"] or cell["execution_count"] is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or an execution count; clear "
                       f"them before committing (jupyter nbconvert --clear-output --inplace)")
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code, f"{path.name} has no code"


def _text(output) -> str:
    """What an output printed: stdout, or the value of a cell that is not a picture."""
    if output["output_type"] == "stream":
        return output["text"] if output["name"] == "stdout" else ""
    data = output.get("data", {})
    return "" if "image/png" in data else data.get("text/plain", "")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_draws(path, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="executing notebooks needs nbformat "
                                   "(pip install -e '.[test]')")
    nbclient = pytest.importorskip("nbclient", reason="executing notebooks needs nbclient "
                                   "(pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="executing notebooks needs ipykernel "
                        "(pip install -e '.[test]')")

    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WHERE))
    env = {**os.environ,
           "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTER_PLATFORM_DIRS": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    work = tmp_path / "cwd"
    work.mkdir()
    before = sorted(p.name for p in FOLDER.iterdir())
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on failure

    where = nb.cells[0].outputs[0]["text"].splitlines()
    assert where[0] == sys.prefix, (
        f"the python3 kernel runs in {where[0]} ({where[1]}), not in the tests' environment "
        f"{sys.prefix} ({sys.executable}): install ipykernel there, or remove the user's "
        f"python3 kernel spec that points elsewhere")
    outputs = [o for cell in nb.cells[1:] if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"{path.name}: {[o['ename'] + ': ' + o['evalue'] for o in errors]}"
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pictures, f"{path.name} drew no picture (no image/png output)"
    assert "".join(_text(o) for o in outputs).strip(), f"{path.name} printed nothing"
    assert sorted(p.name for p in FOLDER.iterdir()) == before, (
        f"running {path.name} changed the notebooks folder")

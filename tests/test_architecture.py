"""The layer rules of ARCHITECTURE.md, as import-linter contracts declared in pyproject.toml."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_every_import_contract_is_kept():
    pyproject = (ROOT / "pyproject.toml").read_text()
    n_contracts = pyproject.count("[[tool.importlinter.contracts]]")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert n_contracts >= 4 and re.search(rf"Contracts: {n_contracts} kept, 0 broken", done.stdout), done.stdout[-2000:]
    assert 'forbidden_modules = ["mlflow"]' in pyproject and 'type = "acyclic_siblings"' in pyproject

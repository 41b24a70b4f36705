"""scripts/setup.sh is idempotent: with a matching stamp it installs nothing (so a second demo run works offline);
a changed pyproject.toml or GEMMA4_SAE_REINSTALL=1 installs again. pip is replaced by a recorder, nothing is
downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkout(tmp: Path) -> Path:
    (tmp / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp / "scripts" / "setup.sh")
    py = tmp / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    # a venv python whose pip only records what it was asked to install
    py.write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> {tmp}/pip.log; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    py.chmod(0o755)
    return tmp


def _setup(repo: Path, **env: str) -> list[str]:
    log = repo / "pip.log"
    log.unlink(missing_ok=True)
    subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=repo, check=True, capture_output=True,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )
    return log.read_text().splitlines() if log.exists() else []


def test_second_setup_installs_nothing(tmp_path):
    repo = _checkout(tmp_path / "repo")
    first = _setup(repo)
    assert any("-e .[test]" in c for c in first) and (repo / ".venv" / ".setup-stamp").exists()
    assert _setup(repo) == []  # the installed package matches pyproject.toml: no pip, no network
    with open(repo / "pyproject.toml", "a") as f:
        f.write("\n# a changed dependency list\n")
    assert any("-e .[test]" in c for c in _setup(repo))
    assert _setup(repo) == []
    assert any("-e .[test]" in c for c in _setup(repo, GEMMA4_SAE_REINSTALL="1"))

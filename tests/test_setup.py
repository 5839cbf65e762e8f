"""``scripts/setup.sh`` refuses an old Python at once, before any install or build.

The script runs from a copy in a temporary folder (it works on the folder it sits in), with a
stand-in interpreter that reports Python 3.9: nothing is installed, nothing is created.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_refuses_python_older_than_3_11_before_doing_anything(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\n[ "$1" = "--version" ] && { echo "Python 3.9.2"; exit 0; }\nexit 1\n')
    old.chmod(0o755)
    proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": str(old)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "needs Python 3.11 or newer" in proc.stderr and "Python 3.9.2" in proc.stderr
    assert "==>" not in proc.stdout  # no step started: no apt-get, no venv, no build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python3.9", "scripts"]

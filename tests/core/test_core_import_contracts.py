"""The layers of DESIGN.md hold: import-linter's contracts (pyproject.toml) are all kept.

`make test` runs `lint-imports` before the suite; this runs it too, so `pytest` alone also
fails on an upward import or a stage importing another stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_import_contract_is_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run(
        [str(linter), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout
    assert out.stdout.count(" KEPT") == 2  # the layers and the shared utilities

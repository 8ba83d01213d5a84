"""The README's quickstart runs end to end (train tokenizer -> model -> generate -> save -> AutoModel reload)."""

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_quickstart_runs_and_reloads_identically(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "examples", "quickstart.py"), "--steps", "30",
         "--output-dir", str(tmp_path / "quickstart")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "same generation" in result.stdout
    assert (tmp_path / "quickstart" / "model.safetensors").exists()

"""The README's first command works alone, first, on a fresh clone: it sets up its environment, then trains."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # whole recipe runs, servers or browsers: skipped by -m "not slow"


def readme_commands() -> list[str]:
    """The command lines of the README's first bash block, comments stripped."""
    text = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split(" #")[0].strip() for line in block.splitlines() if line.split(" #")[0].strip()]


def fresh_clone(destination) -> str:
    """A clone of the checkout as it is now: committed files plus the working tree's tracked and new (not ignored)
    files, so the test sees uncommitted edits too; no .venv, no outputs."""
    subprocess.run(["git", "clone", "--quiet", REPO_ROOT, str(destination)], check=True)
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        source = os.path.join(REPO_ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, name))
    return str(destination)


def test_readme_opens_with_the_main_job_then_the_tests():
    first, second = readme_commands()[:2]
    assert "training.classify" in first and "scripts/test.sh" in second


def test_the_readme_first_command_sets_itself_up_and_trains_on_a_fresh_clone(tmp_path, fake_aclimdb):
    clone = fresh_clone(tmp_path / "clone")
    assert not os.path.exists(os.path.join(clone, ".venv"))
    output = tmp_path / "classify"
    # The README's line as written, with the flags a user adds for a smoke run.
    command = shlex.split(readme_commands()[0]) + [
        "--preset", "tiny", "--data-source", str(fake_aclimdb), "--output-dir", str(output),
    ]
    # A fresh shell: no venv active, nothing of this test run's environment on PATH.
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if os.path.abspath(p) != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=path, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert os.path.isfile(os.path.join(clone, ".venv", "bin", "python")), "the command did not set up .venv"
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["preset"] == "tiny" and 0.0 <= metrics["accuracy"] <= 1.0

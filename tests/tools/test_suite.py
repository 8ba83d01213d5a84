"""The suite's own split (tests/conftest.py, scripts/test.sh): `timed` tests never run on an xdist worker, and
--timed-only runs them alone afterwards, so that every test runs exactly once."""

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # three pytest processes collecting

FILES = ["tests/tools/test_bench.py", "tests/recipes/test_seeds.py"]


def collected(*flags, worker: str | None = None) -> set[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_XDIST_WORKER"}
    if worker:
        env["PYTEST_XDIST_WORKER"] = worker
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *flags, *FILES],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}


def test_timed_tests_run_alone_after_the_workers_and_nothing_runs_twice():
    assert collected() == set(FILES)  # plain pytest: everything
    assert collected(worker="gw0") == {"tests/recipes/test_seeds.py"}  # an xdist worker: no timed test
    assert collected("--timed-only") == {"tests/tools/test_bench.py"}  # the pass after: only those

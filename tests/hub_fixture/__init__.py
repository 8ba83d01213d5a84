"""Test fixtures: a local, offline Hugging Face Hub (olah for downloads + upload_server for uploads) on 127.0.0.1."""

# Test modules import the fixtures by name (`from hub_fixture import hub, hub_server`); pytest picks fixtures up
# from a module's namespace. A conftest.py in this folder would not reach sibling test files.

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DUMMY_TOKEN = "hf_fixtureDummyTokenNotReal0000000000"  # sent as Bearer; the test Hub never checks it
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HubServer:
    """A running local Hub: `.endpoint` is the one URL for both uploads and downloads."""

    endpoint: str
    olah_url: str
    mirrors: Path
    root: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    token: str = DUMMY_TOKEN
    hf_home: Path | None = None  # set per test by the `hub` fixture

    def git_dir(self, repo_id: str, repo_type: str = "models") -> Path:
        """The bare git repo that holds `repo_id` (what olah serves)."""
        return self.mirrors / repo_type / repo_id

    def api(self):
        """An HfApi bound to this endpoint; only inside the `hub` fixture, which repoints huggingface_hub's constants."""
        import huggingface_hub.constants as constants
        from huggingface_hub import HfApi

        # Even with endpoint= set, huggingface_hub sends some requests to constants.ENDPOINT (e.g. a registry
        # fetched while building the User-Agent): refuse unless that, too, is this server.
        if constants.ENDPOINT != self.endpoint:
            raise RuntimeError("use the `hub` fixture for in-process calls: huggingface_hub.constants.ENDPOINT "
                               f"is {constants.ENDPOINT}, not {self.endpoint}")
        return HfApi(endpoint=self.endpoint, token=self.token)

    def env(self, hf_home: str | os.PathLike) -> dict[str, str]:
        """Environment for a child process that talks only to this Hub, with its own (empty) HF_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_TOKEN=self.token,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",  # belt and braces: the test Hub never advertises Xet
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TOKENIZERS_PARALLELISM="false",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        return env

    def logs(self) -> str:
        """Tail of both servers' logs (for failure messages)."""
        parts = []
        for name in ("olah.out", "upload.out"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route 127.0.0.1 via a proxy


def _http_status(url: str) -> int | None:
    """HTTP status of GET url, or None when nothing answers."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _stop(process: subprocess.Popen) -> None:
    """Stop one server we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _launch(root: Path) -> HubServer:
    """Start olah (patched, offline) and the upload server on fresh ports; return once both answer."""
    mirrors, cache, logs = root / "mirrors", root / "olah-cache", root / "olah-logs"
    for d in (mirrors / "models", cache, logs):
        d.mkdir(parents=True, exist_ok=True)
    olah_port, upload_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{upload_port}"
    # hf-netloc points at a closed local port: even a code path that ignored `offline` could not leave the machine.
    (root / "olah.toml").write_text(textwrap.dedent(f"""\
        [basic]
        host = "127.0.0.1"
        port = {olah_port}
        repos-path = "{cache}"
        mirrors-path = ["{mirrors}"]
        hf-scheme = "http"
        hf-netloc = "127.0.0.1:9"
        hf-lfs-netloc = "127.0.0.1:9"
        mirror-scheme = "http"
        mirror-netloc = "127.0.0.1:{upload_port}"
        mirror-lfs-netloc = "127.0.0.1:{upload_port}"

        [accessibility]
        offline = true
        """))
    server = HubServer(endpoint=endpoint, olah_url=f"http://127.0.0.1:{olah_port}", mirrors=mirrors, root=root)
    child_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    try:
        with open(root / "olah.out", "wb") as olah_out, open(root / "upload.out", "wb") as upload_out:
            server.processes.append(subprocess.Popen(
                [sys.executable, str(HERE / "olah_launcher.py"), "-c", str(root / "olah.toml"), "--log-path", str(logs)],
                cwd=root, stdout=olah_out, stderr=subprocess.STDOUT, env=child_env,
            ))
            server.processes.append(subprocess.Popen(
                [sys.executable, str(HERE / "upload_server.py"), "--port", str(upload_port),
                 "--olah-url", server.olah_url, "--mirrors", str(mirrors)],
                cwd=root, stdout=upload_out, stderr=subprocess.STDOUT, env=child_env,
            ))
        # Ready = olah answers anything (a probe for a missing repo gets 401) and the upload server its health route.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            dead = [p for p in server.processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"test Hub server exited with {dead[0].returncode}\n{server.logs()}")
            if (_http_status(f"{server.olah_url}/api/models/fixture/probe/revision/main") is not None
                    and _http_status(f"{endpoint}/__fixture__/health") == 200):
                return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"test Hub not ready after {STARTUP_TIMEOUT_S:.0f}s\n{server.logs()}")
            time.sleep(0.2)
    except BaseException:
        for process in reversed(server.processes):
            _stop(process)
        raise


@contextmanager
def running_hub(root: str | os.PathLike, attempts: int = 3):
    """A started local Hub under `root` (retried on fresh ports if a port was taken meanwhile); stops it on exit."""
    for attempt in range(1, attempts + 1):
        try:
            server = _launch(Path(root) / f"hub-{attempt}")
            break
        except RuntimeError:
            if attempt == attempts:
                raise
    try:
        yield server
    finally:
        for process in reversed(server.processes):
            _stop(process)


@pytest.fixture(scope="module")
def hub_server():
    """One local Hub per test module (olah takes ~2 s to start)."""
    with tempfile.TemporaryDirectory(prefix="hub-fixture-") as root:
        with running_hub(root) as server:
            yield server


@pytest.fixture
def hub(hub_server, tmp_path, monkeypatch):
    """The module's local Hub, with HF_ENDPOINT, a dummy HF_TOKEN and an empty HF_HOME set for this test."""
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    for key, value in hub_server.env(hf_home).items():
        if key.startswith(("HF_", "NO_PROXY", "no_proxy", "TOKENIZERS")):
            monkeypatch.setenv(key, value)
    # huggingface_hub copied HF_ENDPOINT into module constants at import time: repoint them for in-process calls.
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    # ...and so did the module-level HfApi behind huggingface_hub.create_repo/upload_folder/...
    import huggingface_hub.hf_api as hf_api

    monkeypatch.setattr(hf_api.api, "endpoint", hub_server.endpoint)
    # HF_HOME-derived paths and the telemetry switch were read at import too: keep this test's files in its HF_HOME
    # (huggingface_hub caches e.g. an agent-harness registry there) and send no telemetry extras.
    for name, value in (("HF_HOME", hf_home), ("HF_HUB_CACHE", hf_home / "hub"), ("HF_TOKEN_PATH", hf_home / "token"),
                        ("HF_STORED_TOKENS_PATH", hf_home / "stored_tokens"),
                        ("AGENT_HARNESSES_PATH", hf_home / ".agent_harnesses.json")):
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(value))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    hub_server.hf_home = hf_home
    # transformers keeps one lazily built HfApi (push_to_hub uses it) with the endpoint of the moment it was built:
    # start this test with none, and drop the one built against this server when the test ends.
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
    yield hub_server
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and getattr(getattr(transformers_hub, "_hf_api", None), "endpoint", None) == \
            hub_server.endpoint:
        transformers_hub._hf_api = None

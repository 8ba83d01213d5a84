"""Test fixture: a localhost Hub upload API that writes commits into olah's mirror git repos."""

# Usage (a subprocess): python upload_server.py --port P --olah-url http://127.0.0.1:Q --mirrors DIR
#
# olah serves downloads from bare git repos under <mirrors>/<models|datasets|spaces>/<org>/<name> but has no
# upload routes. This server implements the upload calls huggingface_hub really makes (create/delete repo,
# branch, tag, validate-yaml, preupload, NDJSON commit; see /work/shared/notes/hub-offline.md) and forwards
# every other request to olah, so ONE HF_ENDPOINT serves both sides. It answers "regular" to every preupload,
# so files arrive base64-inline in the commit and LFS/Xet are never involved. Stdlib + the git CLI only.

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
TYPE_PLURAL = {None: "models", "model": "models", "dataset": "datasets", "space": "spaces"}
URL_PREFIX = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}
# /api/<type>/<repo_id>/<action>/<rev>: repo_id is "org/name" or "name"; rev arrives quoted (safe="").
REPO_ACTION = re.compile(r"^/api/(models|datasets|spaces)/((?:[^/]+/)?[^/]+)/(preupload|commit|branch|tag)/([^/]+)$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}
# What the Hub puts in a new repo's first commit (shortened: the LFS rules are inert here, files are plain blobs).
INITIAL_GITATTRIBUTES = (
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    "*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    "*.pt filter=lfs diff=lfs merge=lfs -text\n"
    "*.pth filter=lfs diff=lfs merge=lfs -text\n"
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.tar.gz filter=lfs diff=lfs merge=lfs -text\n"
    "*.zip filter=lfs diff=lfs merge=lfs -text\n"
)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "hub-fixture", "GIT_AUTHOR_EMAIL": "hub-fixture@localhost",
    "GIT_COMMITTER_NAME": "hub-fixture", "GIT_COMMITTER_EMAIL": "hub-fixture@localhost",
}


class HubError(Exception):
    """An error answered the way the Hub does: status, X-Error-Code header and a JSON {"error": ...} body."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class MirrorStore:
    """Bare git repos under the mirrors folder, one per Hub repo; all writes hold one lock."""

    def __init__(self, mirrors: str):
        self.mirrors = os.path.abspath(mirrors)
        self.lock = threading.Lock()  # one writer at a time keeps ref updates and index files simple

    def path(self, plural: str, repo_id: str) -> str:
        org, _, name = repo_id.rpartition("/")
        return os.path.join(self.mirrors, plural, org, name)

    def git(self, path: str, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
        """Run git on a bare repo; a failure becomes an exception carrying git's stderr."""
        full_env = {**os.environ, **GIT_IDENTITY, "GIT_DIR": path, **(env or {})}
        result = subprocess.run(["git", *args], input=input, capture_output=True, env=full_env)
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout.decode()

    def require(self, plural: str, repo_id: str) -> str:
        path = self.path(plural, repo_id)
        if not os.path.isdir(path):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return path

    def resolve(self, path: str, revision: str) -> str | None:
        """Commit sha of a branch, tag or sha, or None."""
        try:
            return self.git(path, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}").strip() or None
        except RuntimeError:
            return None

    def create(self, plural: str, repo_id: str) -> None:
        path = self.path(plural, repo_id)
        with self.lock:
            if os.path.isdir(path):
                raise HubError(409, "You already created this model repo")
            os.makedirs(path)
            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", path], check=True, capture_output=True)
            # Like the Hub: a new repo is not empty, it starts with a .gitattributes commit on main.
            self._write_commit(path, "main", None, {".gitattributes": INITIAL_GITATTRIBUTES.encode()},
                               "initial commit", "")

    def delete(self, plural: str, repo_id: str) -> None:
        path = self.require(plural, repo_id)
        with self.lock:
            shutil.rmtree(path)

    def _tree_entries(self, path: str, commit: str | None) -> dict[str, tuple[str, str]]:
        """path -> (mode, blob sha) of every file in `commit`."""
        if commit is None:
            return {}
        out = self.git(path, "ls-tree", "-r", "-z", commit)
        entries = {}
        for record in filter(None, out.split("\0")):
            meta, file_path = record.split("\t", 1)
            mode, _, sha = meta.split(" ")
            entries[file_path] = (mode, sha)
        return entries

    def _write_commit(self, path: str, branch: str, parent: str | None, files: dict[str, bytes | None],
                      summary: str, description: str, base: dict | None = None) -> str:
        """Commit `files` (None = delete) on top of `parent` and move refs/heads/<branch>; caller holds the lock."""
        entries = dict(base if base is not None else self._tree_entries(path, parent))
        for file_path, content in files.items():
            if content is None:
                entries.pop(file_path, None)
            else:
                sha = self.git(path, "hash-object", "-w", "--stdin", input=content).strip()
                entries[file_path] = ("100644", sha)
        # A throwaway index turns the flat path list into nested trees (bare repos have no work tree).
        index_file = os.path.join(path, f"fixture-index-{threading.get_ident()}")
        try:
            env = {"GIT_INDEX_FILE": index_file}
            info = "".join(f"{mode} {sha}\t{p}\0" for p, (mode, sha) in sorted(entries.items()))
            self.git(path, "update-index", "-z", "--index-info", input=info.encode(), env=env)
            tree = self.git(path, "write-tree", env=env).strip()
        finally:
            if os.path.exists(index_file):
                os.remove(index_file)
        message = summary if not description else f"{summary}\n\n{description}"
        parents = ["-p", parent] if parent else []
        commit = self.git(path, "commit-tree", tree, *parents, input=message.encode()).strip()
        # Compare-and-swap on the old value: a concurrent writer would make this fail instead of losing a commit.
        self.git(path, "update-ref", f"refs/heads/{branch}", commit, parent or "0" * 40)
        return commit

    def commit(self, plural: str, repo_id: str, revision: str, header: dict, operations: list[dict]) -> str:
        """Apply NDJSON commit operations to branch `revision`; returns the new commit sha."""
        path = self.require(plural, repo_id)
        with self.lock:
            parent = self.resolve(path, f"refs/heads/{revision}")
            if parent is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, f"A commit has happened since {header['parentCommit']}, the parent commit")
            entries = self._tree_entries(path, parent)
            files: dict[str, bytes | None] = {}
            for op in operations:
                key, value = op.get("key"), op.get("value", {})
                target = value.get("path", "").strip("/")
                if key == "file":
                    raw = value.get("content", "")
                    files[target] = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                    entries.pop(target, None)  # re-added by _write_commit
                elif key == "deletedFile":
                    if target not in entries and files.get(target) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {target}", "EntryNotFound")
                    entries.pop(target, None)
                    files.pop(target, None)
                elif key == "deletedFolder":
                    prefix = target + "/"
                    for p in [p for p in entries if p.startswith(prefix)]:
                        entries.pop(p)
                    for p in [p for p in files if p.startswith(prefix)]:
                        files.pop(p)
                elif key == "lfsFile":
                    # Never happens: preupload answers "regular" for every file.
                    raise HubError(400, f"LFS uploads are not supported by the test Hub ({target})")
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            return self._write_commit(path, revision, parent, files, header.get("summary", ""),
                                      header.get("description", ""), base=entries)

    def create_ref(self, plural: str, repo_id: str, kind: str, name: str, starting_point: str) -> None:
        """Create a branch or lightweight tag at `starting_point`."""
        path = self.require(plural, repo_id)
        ref = f"refs/{'heads' if kind == 'branch' else 'tags'}/{name}"
        with self.lock:
            if subprocess.run(["git", "check-ref-format", ref]).returncode != 0:
                raise HubError(400, f"Invalid {kind} name: {name}")
            if self.resolve(path, ref) is not None:
                raise HubError(409, f"Reference already exists: {ref}")
            target = self.resolve(path, starting_point)
            if target is None:
                raise HubError(404, f"Invalid rev id: {starting_point}", "RevisionNotFound")
            self.git(path, "update-ref", ref, target, "0" * 40)

    def delete_ref(self, plural: str, repo_id: str, kind: str, name: str) -> None:
        path = self.require(plural, repo_id)
        ref = f"refs/{'heads' if kind == 'branch' else 'tags'}/{name}"
        with self.lock:
            if kind == "branch" and name == "main":
                raise HubError(403, "Cannot delete the main branch")
            if self.resolve(path, ref) is None:
                raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            self.git(path, "update-ref", "-d", ref)


class Handler(BaseHTTPRequestHandler):
    """Upload routes answered here; everything else relayed to olah."""

    protocol_version = "HTTP/1.1"  # keep-alive: every response below carries a Content-Length
    store: MirrorStore
    olah_url: str
    endpoint: str

    def log_message(self, fmt, *args):  # one line per request on stderr, kept for debugging failed tests
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")

    # --- plumbing -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _json(self) -> dict:
        data = self._body()
        return json.loads(data) if data else {}

    def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, {"error": error.message}, headers)

    def _repo_url(self, plural: str, repo_id: str) -> str:
        return f"{self.endpoint}/{URL_PREFIX[plural]}{repo_id}"

    def _dispatch(self, handler) -> None:
        try:
            handler()
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # answer 500 with the reason instead of dropping the connection
            self._send(500, {"error": f"{type(error).__name__}: {error}"})

    # --- methods --------------------------------------------------------------------------------
    def do_GET(self):
        if urlsplit(self.path).path == "/__fixture__/health":
            return self._send(200, {"ok": True})
        self._dispatch(self._relay)

    def do_HEAD(self):
        self._dispatch(self._relay)

    def do_POST(self):
        self._dispatch(self._post)

    def do_DELETE(self):
        self._dispatch(self._delete)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/repos/create":
            return self._create_repo()
        if path == "/api/validate-yaml":
            self._body()
            return self._send(200, {"errors": [], "warnings": []})
        match = REPO_ACTION.match(path)
        if not match:
            return self._relay()  # e.g. paths-info, which olah answers
        plural, repo_id, action, revision = match.group(1), match.group(2), match.group(3), unquote(match.group(4))
        if action == "preupload":
            files = self._json().get("files", [])
            self.store.require(plural, repo_id)
            return self._send(200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files
            ]})
        if action == "commit":
            return self._commit(plural, repo_id, revision)
        body = self._json()
        if action == "branch":
            self.store.create_ref(plural, repo_id, "branch", revision, body.get("startingPoint") or "main")
        else:  # tag: the URL names the revision to tag, the body the tag name
            self.store.create_ref(plural, repo_id, "tag", body.get("tag", ""), revision)
        return self._send(200, {})

    def _create_repo(self) -> None:
        body = self._json()
        plural = TYPE_PLURAL.get(body.get("type"))
        if plural is None:
            raise HubError(400, f"Unsupported repo type {body.get('type')!r}")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        try:
            self.store.create(plural, repo_id)
        except HubError as error:
            if error.status == 409:  # the client's exist_ok reads a 409 carrying the url
                return self._send(409, {"error": error.message, "url": self._repo_url(plural, repo_id)})
            raise
        self._send(200, {"url": self._repo_url(plural, repo_id), "name": repo_id})

    def _commit(self, plural: str, repo_id: str, revision: str) -> None:
        if "create_pr" in (urlsplit(self.path).query or ""):
            raise HubError(400, "Pull requests are not supported by the test Hub")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        operations = [line for line in lines if line.get("key") != "header"]
        sha = self.store.commit(plural, repo_id, revision, header, operations)
        self._send(200, {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self._repo_url(plural, repo_id)}/commit/{sha}",
            "commitMessage": header.get("summary", ""),
            "pullRequestUrl": None,
        })

    def _delete(self) -> None:
        path = urlsplit(self.path).path
        if path == "/api/repos/delete":
            body = self._json()
            plural = TYPE_PLURAL.get(body.get("type"), "models")
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            self.store.delete(plural, repo_id)
            return self._send(200, {})
        match = REPO_ACTION.match(path)
        if match and match.group(3) in ("branch", "tag"):
            self._body()
            self.store.delete_ref(match.group(1), match.group(2), match.group(3), unquote(match.group(4)))
            return self._send(200, {})
        raise HubError(405, f"DELETE {path} is not supported by the test Hub")

    def _relay(self) -> None:
        """Forward the request to olah and send its answer back (GET bodies buffered: test files are small)."""
        body = self._body() if self.command not in ("GET", "HEAD") else None
        target = urlsplit(self.olah_url)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read() if self.command != "HEAD" else b""
            self.send_response(response.status)
            for key, value in response.getheaders():
                lower = key.lower()
                if lower in HOP_BY_HOP | {"date", "server"} or (lower == "content-length" and self.command != "HEAD"):
                    continue
                if lower == "location" and value.startswith(self.olah_url):
                    # olah redirects (e.g. tree/main -> tree/main/) to its own address: keep clients on ours.
                    value = self.endpoint + value[len(self.olah_url):]
                self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            elif response.getheader("Content-Length") is None:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if data:
                self.wfile.write(data)
        finally:
            conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--olah-url", required=True, help="where olah listens, e.g. http://127.0.0.1:8090")
    parser.add_argument("--mirrors", required=True, help="olah's mirrors-path (bare repos are created under it)")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the test Hub only listens on localhost")
    Handler.store = MirrorStore(args.mirrors)
    Handler.olah_url = args.olah_url.rstrip("/")
    Handler.endpoint = f"http://{args.host}:{args.port}"
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"upload server on {Handler.endpoint}, relaying to {Handler.olah_url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

"""Test fixture: runs olah 0.5.4 offline, with revision names resolved from the local mirror git repos."""

# Usage (a subprocess): python olah_launcher.py -c olah.toml --log-path DIR
# Stock olah 0.5.4 in offline mode resolves branches/tags/"newest commit" only from its HTTP cache, never from
# the mirror git repos, so AutoTokenizer/pipeline/model_info fail on a purely local repo (see
# /work/shared/notes/hub-offline.md). These patches make every resolution read the mirror repo first.

from __future__ import annotations

import os
import sys
from importlib.metadata import version

import git
import gitdb

OLAH_VERSION = "0.5.4"
# The patches replace private olah functions by name: refuse to run against another version.
if version("olah") != OLAH_VERSION:
    sys.exit(f"olah_launcher expects olah=={OLAH_VERSION}, found {version('olah')}")

import olah.server  # noqa: E402
import olah.server_api_routes  # noqa: E402
import olah.server_file_routes  # noqa: E402
import olah.server_mirror  # noqa: E402
import olah.server_upstream  # noqa: E402
import olah.utils.repo_utils as repo_utils  # noqa: E402
from olah.errors import error_revision_not_found  # noqa: E402
from olah.server_upstream import ResolvedCommit  # noqa: E402

_GIT_ERRORS = (gitdb.exc.BadName, gitdb.exc.BadObject, git.exc.GitError, ValueError, KeyError, IndexError, TypeError)


def _mirror_paths(app, repo_type: str, org: str | None, repo: str) -> list[str]:
    """The mirror git repos that could hold repo_type/org/repo (one per configured mirrors-path)."""
    paths = [os.path.join(m, repo_type, org or "", repo) for m in app.state.app_settings.config.mirrors_path]
    return [p for p in paths if os.path.isdir(p)]


def _resolve_in_mirrors(app, repo_type: str, org: str | None, repo: str, revision: str) -> str | None:
    """Full commit sha of `revision` (branch, tag, short or full sha) in a mirror repo, or None."""
    for path in _mirror_paths(app, repo_type, org, repo):
        try:
            commit = git.Repo(path).commit(revision)
            commit.tree  # GitPython builds Commit objects for unknown full shas lazily: force the lookup
            return commit.hexsha
        except _GIT_ERRORS:
            continue
    return None


_orig_get_commit_offline = repo_utils.get_commit_hf_offline
_orig_get_newest_offline = repo_utils.get_newest_commit_hf_offline
_orig_resolve = olah.server_upstream.resolve_requested_commit
_orig_load_payload = olah.server_mirror.load_local_mirror_payload


async def get_commit_hf_offline(app, repo_type, org, repo, commit):
    """Mirror repo first, then olah's own cache."""
    sha = _resolve_in_mirrors(app, repo_type, org, repo, commit)
    return sha if sha is not None else await _orig_get_commit_offline(app, repo_type, org, repo, commit)


async def get_newest_commit_hf_offline(app, repo_type, org, repo):
    """A mirror repo's newest commit is its `main` branch (what the Hub reports as the repo's sha)."""
    sha = _resolve_in_mirrors(app, repo_type, org, repo, "main")
    return sha if sha is not None else await _orig_get_newest_offline(app, repo_type, org, repo)


async def resolve_requested_commit(app, repo, requested_commit, authorization, repo_visible=False,
                                   missing_commit_response="revision_not_found"):
    """For a mirrored repo an unknown revision is RevisionNotFound (404), not RepoNotFound or a 500."""
    if _mirror_paths(app, repo.repo_type, repo.org, repo.repo):
        sha = _resolve_in_mirrors(app, repo.repo_type, repo.org, repo.repo, requested_commit)
        if sha is None:
            return None, error_revision_not_found(revision=requested_commit)
        return ResolvedCommit(requested=requested_commit, resolved=sha), None
    return await _orig_resolve(app, repo, requested_commit, authorization, repo_visible=repo_visible,
                               missing_commit_response=missing_commit_response)


def load_local_mirror_payload(app, repo, loader, logger):
    """A missing path or unknown sha in a mirror means "not here" (fall through), not an unhandled 500."""
    try:
        return _orig_load_payload(app, repo, loader, logger)
    except _GIT_ERRORS:
        return None


def apply_patches() -> None:
    """Install the replacements under every name olah's routes look them up by."""
    repo_utils.get_commit_hf_offline = get_commit_hf_offline
    repo_utils.get_newest_commit_hf_offline = get_newest_commit_hf_offline
    for module in (olah.server_upstream, olah.server_api_routes, olah.server_file_routes):
        if hasattr(module, "resolve_requested_commit"):
            module.resolve_requested_commit = resolve_requested_commit
    for module in (olah.server_mirror, olah.server_api_routes, olah.server_file_routes):
        if hasattr(module, "load_local_mirror_payload"):
            module.load_local_mirror_payload = load_local_mirror_payload


if __name__ == "__main__":
    apply_patches()
    olah.server.cli()

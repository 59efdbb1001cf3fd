"""Fetching a pushed dataset, or one version of it, into a new folder: `hdiff pull REPO[@REVISION] OUT`.

The revision (a tag `v1`, a branch, a commit; default main) is resolved to one commit first, so every file comes
from the same commit. Only the files a push manages (hdiff.publish.UPLOAD_PATTERNS) are fetched, into a temporary
sibling of OUT (the files copied out of the Hugging Face cache, no links); the folder must then pass
`hdiff verify`, and only then is it renamed to OUT. A failed pull leaves nothing. The result is a dataset folder
as a build leaves it: `hdiff verify OUT` passes, `hdiff build OUT/hdiff.yaml` extends it (hdiff.dataset.recipe)
and `hdiff push OUT --repo REPO` commits only what that build changed.

The token (argument, else HF_TOKEN, else the `hf auth login` token; none is needed for a public repo) goes to
huggingface_hub only; failures are one line with it scrubbed out, as in hdiff.publish.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi, get_token, snapshot_download

from hdiff.dataset import layout
from hdiff.dataset.verify import verify_build
from hdiff.errors import HdiffError
from hdiff.files import atomic_folder
from hdiff.publish import UPLOAD_PATTERNS, _redacted_transport_logs, describe, scrub


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`owner/name@v1` -> ("owner/name", "v1"); no `@`: the revision is None (main)."""
    repo_id, at, revision = spec.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or (at and not revision):
        raise HdiffError(f"{spec!r}: expected OWNER/NAME or OWNER/NAME@REVISION (a tag such as v1, a branch or a "
                         "commit)")
    return repo_id, revision or None


def pull_dataset(spec: str, out_dir: str | os.PathLike, *, token: str | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Fetch the dataset `spec` (OWNER/NAME[@REVISION]) into the new folder `out_dir` and verify it; returns the
    folder. HdiffError (one line, nothing left behind) when OUT exists, the repo or revision cannot be read, or the
    fetched files fail verification."""
    repo_id, revision = parse_spec(spec)
    out = Path(out_dir)
    if out.exists():
        raise HdiffError(f"{out} already exists; pull into a new folder")
    secret = token or get_token()
    with atomic_folder(out, overwrite=False) as staging:
        with _redacted_transport_logs(secret or "\0"):
            try:
                commit = HfApi(token=secret).dataset_info(repo_id, revision=revision, token=secret).sha
                snapshot = snapshot_download(repo_id, repo_type="dataset", revision=commit, token=secret,
                                             allow_patterns=UPLOAD_PATTERNS, cache_dir=cache_dir)
            except Exception as err:  # huggingface_hub/httpx errors may quote the request
                where = f"{repo_id}@{revision}" if revision else repo_id
                raise HdiffError(f"pulling {where} failed: {scrub(describe(err), secret or chr(0))}") from None
        copy_snapshot(Path(snapshot), staging)
        if not layout.manifest_path(staging).is_file():
            raise HdiffError(f"{spec} holds no {layout.MANIFEST_NAME}: not a dataset hdiff pushed")
        if problems := verify_build(staging):
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise HdiffError(f"{spec} fails verification, nothing kept: {problems[0]}{more}")
    return out


def copy_snapshot(snapshot: Path, folder: Path) -> None:
    """Copy the snapshot's files (links into the cache's blobs) into `folder` as plain files."""
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():
            target = folder / path.relative_to(snapshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)

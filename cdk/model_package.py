"""Turn a local model folder into the ``model.tar.gz`` SageMaker downloads into ``/opt/ml/model``.

Why our own archive: a CDK directory asset is a *zip*, and SageMaker only unpacks gzip tarballs. Why deterministic
(sorted entries, zeroed mtimes and owners, gzip without a timestamp): the asset hash is the archive's hash, so an
unchanged model must give byte-identical archives, or every synth would upload the weights again and replace the
endpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:20]


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def package_model(folder: Path, cache_dir: Path) -> Path:
    """``cache_dir/model-<content hash>.tar.gz`` with the folder's files at the archive root; reused when present."""
    target = cache_dir / f"model-{_folder_digest(folder)}.tar.gz"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, staging_name = tempfile.mkstemp(prefix="model-", suffix=".tar.gz.tmp", dir=cache_dir)
    staging = Path(staging_name)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False,
                                filter=_normalized)
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    logger.debug("packaged %s -> %s", folder, target)
    return target

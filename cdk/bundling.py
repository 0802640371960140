"""Docker-free bundling of the Lambda layer and the function packages (CDK ``ILocalBundling``).

Why local: CI and laptops have no Docker daemon, and the layer only needs wheels. pip can fetch manylinux
*aarch64* wheels on any host (``--platform manylinux2014_aarch64 --only-binary=:all:``), so the layer built on
an x86 laptop is the one Lambda's arm64 runtime loads. Why a cache: the install is the only step that needs the
package index; keyed by the pinned requirements, it runs once, and every later synth — the offline CLI synth
included — copies the cached tree.

Bytecode: Lambda's ``/opt`` and ``/var/task`` are read-only, so a package shipped without ``.pyc`` files is
compiled from source on every cold start (``bench.coldstart``: ~3x the import time). Bytecode must come from the
runtime's own Python version, which the build host rarely has; when it does (``python3.14`` on ``PATH``, or the
interpreter named by ``CLAWDBOT_LAMBDA_PYTHON``), the layer and the functions ship ``.pyc`` files it compiled,
hash-checked-free (``unchecked-hash``: the zip's timestamps do not matter). Otherwise the synth says once that it
ships source only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import jsii
from aws_cdk import ILocalBundling

from cdk.config import REPO_ROOT, TOKENIZER_FILES
from cdk.layer_slimming import IGNORED_FILES, ignore_for_layer, slim_botocore_data

if TYPE_CHECKING:
    from aws_cdk import BundlingOptions

logger = logging.getLogger(__name__)

LAMBDA_PYTHON_VERSION = "3.14"
PIP_PLATFORM = "manylinux2014_aarch64"
LAYER_REQUIREMENTS = REPO_ROOT / "layers" / "requirements.txt"
LAYER_PACKAGE = REPO_ROOT / "layers" / "python" / "clawdbot"
#: Where the pip-installed site-packages are cached between synths (``build/`` is git-ignored).
BUILD_DIR = Path(os.environ.get("CLAWDBOT_CDK_BUILD_DIR", REPO_ROOT / "build" / "cdk"))
#: Import names that must never reach a Lambda: inference runs on SageMaker, the stack is built elsewhere.
FORBIDDEN_IN_BUNDLE = ("onnxruntime", "onnxruntime_genai", "numpy", "torch", "transformers", "aws_cdk", "jsii")
#: Where the tokenizer bundle lands inside a function package (``/var/task`` is Lambda's code root).
MODEL_SUBDIR = "model"
LAMBDA_MODEL_DIR = f"/var/task/{MODEL_SUBDIR}"

#: Names a Python for the Lambda runtime's version, to compile the bundles' bytecode with.
LAMBDA_PYTHON_ENV = "CLAWDBOT_LAMBDA_PYTHON"
_warned_no_bytecode = False


class BundlingError(RuntimeError):
    """The layer or a function package could not be built; the message says which and why."""


def _requirements_key(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{PIP_PLATFORM}/{LAMBDA_PYTHON_VERSION}".encode())
    return digest.hexdigest()[:16]


def installed_layer_site(requirements: Path = LAYER_REQUIREMENTS, build_dir: Path = BUILD_DIR) -> Path:
    """The pip-installed third-party packages of the layer, built once per requirements file content."""
    target = build_dir / f"layer-site-{_requirements_key(requirements)}"
    if target.is_dir():
        logger.debug("layer site cache hit: %s", target)
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="layer-site-", dir=build_dir))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--platform", PIP_PLATFORM, "--only-binary=:all:", "--implementation", "cp",
               "--python-version", LAMBDA_PYTHON_VERSION, "--target", str(staging), "--no-deps",
               "-r", str(requirements)]  # the file pins the whole layer, deliberate omissions included
    logger.debug("building layer site: %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundlingError(f"pip could not install the layer requirements ({requirements}) for "
                            f"{PIP_PLATFORM}/cp{LAMBDA_PYTHON_VERSION}; the first synth needs the package index, "
                            f"later ones reuse {build_dir}.\n{result.stderr.strip()[-2000:]}")
    for leftover in ("bin", "__pycache__"):  # console scripts and bytecode of the build host are dead weight
        shutil.rmtree(staging / leftover, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another synth finished first: its identical tree wins
        shutil.rmtree(staging, ignore_errors=True)
    return target


def forbidden_packages(root: Path) -> list[str]:
    """Top-level import names under ``root`` that must not ship in a Lambda package."""
    return sorted(name for name in FORBIDDEN_IN_BUNDLE
                  if (root / name).exists() or (root / f"{name}.py").exists())


def lambda_python() -> str | None:
    """An interpreter of Lambda's Python version (``CLAWDBOT_LAMBDA_PYTHON``, else ``python3.14`` on ``PATH``),
    or None; one of another version is refused, since its bytecode would be ignored on Lambda."""
    candidate = os.environ.get(LAMBDA_PYTHON_ENV) or shutil.which(f"python{LAMBDA_PYTHON_VERSION}")
    if not candidate:
        return None
    probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
    version = probe.stdout.strip()
    if probe.returncode != 0 or version != LAMBDA_PYTHON_VERSION:
        raise BundlingError(f"{LAMBDA_PYTHON_ENV}={candidate} is Python {version or '(did not run)'}, but the "
                            f"functions run Python {LAMBDA_PYTHON_VERSION}: its bytecode would be ignored")
    return candidate


def compile_bytecode(root: Path, interpreter: str | None) -> bool:
    """Compile every module under ``root`` with ``interpreter`` (``unchecked-hash`` pyc files); False when
    there is no interpreter, so the bundle ships source only (said once per process)."""
    global _warned_no_bytecode
    if interpreter is None:
        if not _warned_no_bytecode:
            _warned_no_bytecode = True
            logger.warning("no Python %s to compile the Lambda bundles' bytecode with (install it, or set %s): "
                           "they ship source only, compiled on every cold start", LAMBDA_PYTHON_VERSION,
                           LAMBDA_PYTHON_ENV)
        return False
    result = subprocess.run([interpreter, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                             "unchecked-hash", str(root)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BundlingError(f"compiling the bytecode of {root} failed:\n{(result.stdout + result.stderr)[-2000:]}")
    return True


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=IGNORED_FILES, dirs_exist_ok=True)


@jsii.implements(ILocalBundling)
class LayerBundling:
    """``python/`` = pinned third-party packages + the ``clawdbot`` library, as Lambda layers expect; what the
    packages carry that no Lambda uses is left out or trimmed (``cdk.layer_slimming``)."""

    def __init__(self, requirements: Path = LAYER_REQUIREMENTS, package: Path = LAYER_PACKAGE,
                 build_dir: Path = BUILD_DIR) -> None:
        self.requirements = requirements
        self.package = package
        self.build_dir = build_dir

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        python_dir = Path(output_dir) / "python"
        shutil.copytree(installed_layer_site(self.requirements, self.build_dir), python_dir,
                        ignore=ignore_for_layer, dirs_exist_ok=True)
        _copy_tree(self.package, python_dir / self.package.name)
        bad = forbidden_packages(python_dir)
        if bad:
            raise BundlingError(f"the layer must not contain {', '.join(bad)}: remove them from "
                                f"{self.requirements.name} (inference dependencies live in the SageMaker image)")
        botocore_data = python_dir / "botocore" / "data"
        if botocore_data.is_dir():
            logger.debug("botocore data slimmed: %s", slim_botocore_data(botocore_data))
        compile_bytecode(python_dir, lambda_python())
        return True


@jsii.implements(ILocalBundling)
class FunctionBundling:
    """A handler folder plus the model's tokenizer files under ``model/`` — no third-party code (that is the layer)."""

    def __init__(self, source: Path, tokenizer_dir: Path) -> None:
        self.source = source
        self.tokenizer_dir = tokenizer_dir

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        out = Path(output_dir)
        _copy_tree(self.source, out)
        model_dir = out / MODEL_SUBDIR
        model_dir.mkdir(exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.tokenizer_dir / name).is_file():
                shutil.copy2(self.tokenizer_dir / name, model_dir / name)
        bad = forbidden_packages(out)
        if bad:
            raise BundlingError(f"{self.source} must not vendor {', '.join(bad)}: Lambda code gets its packages "
                                "from the layer")
        compile_bytecode(out, lambda_python())
        return True


def zipped_size(root: Path) -> int:
    """Bytes of ``root`` zipped with deflate, as the CDK CLI uploads a Lambda asset; for the size report."""
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(root).as_posix())
        handle.seek(0, os.SEEK_END)
        return handle.tell()


def unzipped_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

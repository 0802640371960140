"""Docker-free bundles: the layer (arm64 wheels + clawdbot) and the function packages, and the model archive."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tomllib
from typing import TYPE_CHECKING

import pytest

from cdk.bundling import (
    FORBIDDEN_IN_BUNDLE,
    LAMBDA_PYTHON_ENV,
    LAMBDA_PYTHON_VERSION,
    LAYER_REQUIREMENTS,
    BundlingError,
    LayerBundling,
    _requirements_key,
    compile_bytecode,
    forbidden_packages,
    lambda_python,
    unzipped_size,
    zipped_size,
)
from cdk.config import REPO_ROOT
from cdk.layer_slimming import BOTOCORE_SERVICES
from cdk.model_package import package_model

if TYPE_CHECKING:
    from pathlib import Path

    from tests.cdk.conftest import Synthesized

MB = 1024 * 1024


def _asset(synthesized: Synthesized, prefix: str) -> Path:
    ids = [k for k, v in synthesized.raw["Resources"].items()
           if k.startswith(prefix) and v["Type"] in ("AWS::Lambda::LayerVersion", "AWS::Lambda::Function")]
    assert len(ids) == 1, ids
    return synthesized.asset_dir(ids[0])


def test_layer_holds_the_library_and_arm64_wheels_and_nothing_for_inference(synthesized: Synthesized) -> None:
    python = _asset(synthesized, "SharedLayer") / "python"
    for package in ("clawdbot", "fastapi", "mangum", "aws_lambda_powertools", "pydantic", "tokenizers", "redis"):
        assert (python / package).is_dir(), package
    native = list((python / "pydantic_core").glob("*.so"))
    assert native and all("aarch64" in p.name for p in native), native
    assert forbidden_packages(python) == []
    assert not list(python.rglob("__pycache__"))
    # slimmed (cdk.layer_slimming): no pydantic.v1, botocore's endpoints cut to the services it keeps
    assert (python / "pydantic" / "main.py").is_file() and not (python / "pydantic" / "v1").exists()
    assert (python / "botocore" / "data" / "endpoints.json").stat().st_size < 100_000
    # Lambda's limit is 250 MB unzipped for function + layers; keep the layer well inside it
    assert unzipped_size(python) < 150 * MB
    assert zipped_size(python) < 50 * MB


def test_the_layer_carries_the_models_of_the_services_it_calls_and_no_other(synthesized: Synthesized) -> None:
    # GIVEN the synthesized layer, on its own (-S: no site-packages of this machine)
    python = _asset(synthesized, "SharedLayer") / "python"
    services = {p.name for p in (python / "botocore" / "data").iterdir() if p.is_dir()}
    code = (
        "import botocore.session, json, sys\n"
        "session = botocore.session.get_session()\n"
        "made = [session.create_client(s, region_name='us-east-1', aws_access_key_id='k',\n"
        "                              aws_secret_access_key='s').meta.service_model.service_name\n"
        "        for s in sys.argv[1:]]\n"
        "try:\n"
        "    session.create_client('s3', region_name='us-east-1')\n"
        "except botocore.exceptions.UnknownServiceError:\n"
        "    made.append('no s3')\n"
        "print(json.dumps([botocore.__file__, made]))\n"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code, *sorted(BOTOCORE_SERVICES)], capture_output=True,
                          text=True, timeout=120, check=False, env={"PYTHONPATH": str(python)})
    assert done.returncode == 0, done.stderr
    origin, made = json.loads(done.stdout)
    # THEN botocore keeps exactly those services' models, a client of each can be made from the layer alone
    # (endpoints and partitions kept), and any other service is unknown there: ~16 MB of models left out
    assert services == BOTOCORE_SERVICES
    assert origin.startswith(str(python))
    assert made == [*(name for name in sorted(BOTOCORE_SERVICES)), "no s3"]


def test_the_lambda_code_calls_only_the_services_the_layer_keeps() -> None:
    # Every client the library and the handlers make names its service as a literal (the CLI, which runs on the
    # operator's machine and downloads a model from S3, is not in a Lambda).
    pattern = re.compile(r"""(?:make_client|LazyClient|\.client)\(\s*["']([a-z0-9-]+)["']""")
    sources = [p for p in (REPO_ROOT / "layers" / "python" / "clawdbot").rglob("*.py") if "cli" not in p.parts]
    sources += list((REPO_ROOT / "functions").rglob("*.py"))
    called = {name for path in sources for name in pattern.findall(path.read_text(encoding="utf-8"))}
    called.add("dynamodb")  # Powertools' idempotency store (the worker's turns, the API's queued turns)
    assert {"dynamodb", "sqs", "sns", "secretsmanager", "sagemaker-runtime"} <= called  # the scan finds them
    assert called <= BOTOCORE_SERVICES, sorted(called - BOTOCORE_SERVICES)


def test_function_packages_are_handler_plus_tokenizer_bundle_only(synthesized: Synthesized) -> None:
    for prefix in ("ChatApiFunction", "ChatWorkerFunction"):
        root = _asset(synthesized, prefix)
        assert (root / "handler.py").is_file()
        assert (root / "model" / "tokenizer.json").is_file()
        assert (root / "model" / "tokenizer_config.json").is_file()
        assert not list((root / "model").glob("*.onnx")), "the weights live on SageMaker, not in the Lambda"
        assert forbidden_packages(root) == []
        assert zipped_size(root) < 5 * MB


def test_layer_requirements_cover_the_core_dependencies_and_redis() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    wanted = {re.split(r"[<>=!\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-")
              for dep in pyproject["project"]["dependencies"]} | {"redis"}
    pinned = {}
    for line in LAYER_REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    assert wanted <= set(pinned), wanted - set(pinned)
    assert not {n.replace("_", "-") for n in FORBIDDEN_IN_BUNDLE} & set(pinned)
    assert "aws-cdk-lib" not in pinned


#: Declared dependencies the layer leaves out on purpose (layers/requirements.txt says why).
LEFT_OUT = {("tokenizers", "huggingface-hub")}


def test_layer_pins_are_closed_under_what_the_packages_need_on_lambda() -> None:
    """Installed with --no-deps, the layer is exactly its pins: each pinned package's dependencies (as their
    metadata declares them for CPython 3.14 on arm64 Linux) must be pinned too, but for the omissions above."""
    from importlib.metadata import distribution

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    environment = {**default_environment(), "python_version": "3.14", "python_full_version": "3.14.0",
                   "platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux", "extra": ""}
    pinned = {norm(line.split("==")[0]) for line in LAYER_REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    missing = set()
    for name in pinned:
        for declared in distribution(name).requires or []:
            requirement = Requirement(declared)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if norm(requirement.name) not in pinned and (name, norm(requirement.name)) not in LEFT_OUT:
                missing.add(f"{name} -> {requirement.name}")
    assert not missing, sorted(missing)
    assert "huggingface-hub" not in pinned


def test_layer_bundling_refuses_an_inference_dependency(tmp_path: Path) -> None:
    # GIVEN requirements whose installed tree (pre-seeded in the cache, so no index is needed) contains numpy
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.0.0\n")
    site = tmp_path / "build" / f"layer-site-{_requirements_key(requirements)}"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("")
    out = tmp_path / "out"
    out.mkdir()
    bundler = LayerBundling(requirements=requirements, build_dir=tmp_path / "build")
    # WHEN the layer is bundled THEN it is refused, naming the package
    with pytest.raises(BundlingError, match="numpy"):
        bundler.try_bundle(str(out), None)  # type: ignore[arg-type]


def test_model_archive_is_deterministic_with_files_at_the_root(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"weights" * 100)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "sub" / "extra.txt").write_text("x")
    first = package_model(folder, tmp_path / "cache-a")
    second = package_model(folder, tmp_path / "cache-b")
    assert first.read_bytes() == second.read_bytes()  # same bytes -> same asset hash -> no re-upload
    with tarfile.open(first, "r:gz") as archive:
        members = archive.getmembers()
    assert sorted(m.name for m in members) == ["model.onnx", "sub/extra.txt", "tokenizer.json"]
    assert {m.mtime for m in members} == {0}
    (folder / "model.onnx").write_bytes(b"other weights")
    assert package_model(folder, tmp_path / "cache-a") != first


def test_bytecode_compiled_for_the_runtime_is_used_without_reading_the_source(tmp_path: Path) -> None:
    import subprocess
    import sys

    # GIVEN a package compiled by an interpreter of the target version (this one stands in for Lambda's)
    package = tmp_path / "layer" / "shipped"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("ORIGIN = 'compiled'\n")
    assert compile_bytecode(tmp_path / "layer", sys.executable)
    pyc = package / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01  # hash-based, source never checked
    # WHEN the source changes afterwards (a zip's timestamps would not say so) and the tree is read-only
    (package / "__init__.py").write_text("ORIGIN = 'source'\n")
    for path in (package, package / "__pycache__"):
        path.chmod(0o555)
    try:
        done = subprocess.run([sys.executable, "-c", "import shipped; print(shipped.ORIGIN)"], cwd=tmp_path / "layer",
                              capture_output=True, text=True, check=True)
    finally:
        for path in (package, package / "__pycache__"):
            path.chmod(0o755)
    # THEN the shipped bytecode ran: no compile at import
    assert done.stdout.strip() == "compiled"


def test_bytecode_of_another_python_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # The functions run LAMBDA_PYTHON_VERSION; this interpreter is another (or the test would prove nothing).
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" != LAMBDA_PYTHON_VERSION
    monkeypatch.setenv(LAMBDA_PYTHON_ENV, sys.executable)
    with pytest.raises(BundlingError, match=f"functions run Python {LAMBDA_PYTHON_VERSION}"):
        lambda_python()
    assert not compile_bytecode(tmp_path, None)  # no interpreter: source only
    assert not list(tmp_path.rglob("*.pyc"))

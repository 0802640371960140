"""What the Lambda layer leaves out of the wheels it ships, or ships smaller: less to unzip, and less for each cold
start to read and parse.

The layer is pinned wheels (``layers/requirements.txt``) and the ``clawdbot`` package. Some of the wheels' content
no Lambda of ours runs, and some of that is read by every cold start all the same:

- **botocore's service models.** botocore ships ~450 services' models; the layer keeps the five the code calls
  (:data:`BOTOCORE_SERVICES`; ``tests/cdk/test_cdk_bundling.py`` checks that it calls no other).
- **botocore's ``endpoints.json``** (1.25 MB: every service's hosts in every partition). A botocore session parses it
  whole, into ``OrderedDict`` objects, to make its first client. The layer keeps the entries of the kept services
  (by their models' ``endpointPrefix``), so those resolve as before: ~26 KB.
- **The kept models' documentation**, 85% of DynamoDB's model: the text of botocore's docstrings, parsed with the
  rest when a client is made and read only by ``help()``. The layer drops it from operations and shapes; the
  ``clientContextParams`` keep theirs, which botocore requires.
- **``pydantic.v1``**, pydantic's copy of its first major version. Nothing in the layer uses v1 models, but FastAPI
  imports the copy to ask whether a route's types are v1 models (``fastapi._compat``), on the first route it builds:
  ~25 ms of chat_api's cold start. Absent, that import fails and FastAPI answers "no", as it does without pydantic v1
  installed. A type that still uses v1's ``__get_validators__`` hook would fail to build a schema instead of
  warning (``pydantic._internal._generate_schema``). Nothing in the layer has one.

Measured (``bench.coldstart``, ``docs/performance.md``): making the chat API's three clients took ~37 ms with
botocore's full data and ~20 ms slimmed, and ``pydantic.v1`` was ~25 ms of the handler's import.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

#: The AWS services the Lambdas call: every client the library makes (``clawdbot.aws_clients``: sessions, keys and
#: rate limits, the turn queue, reply topics, the deploy key's secret, the model endpoint) and Powertools'
#: idempotency store. botocore ships the models of every AWS service (~450, 16.5 of the layer's 26 MB zipped).
BOTOCORE_SERVICES = frozenset({"dynamodb", "sqs", "sns", "secretsmanager", "sagemaker-runtime"})
#: Sub-packages of the layer's wheels that are left out, as (package, sub-package).
OMITTED_SUBPACKAGES = frozenset({("pydantic", "v1")})
#: The build host's bytecode: a layer ships none of it (``cdk.bundling.compile_bytecode`` compiles for Lambda).
IGNORED_FILES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache")
_DOCS = ("documentation", "documentationUrl")


def omitted_modules() -> list[str]:
    """The dotted names of :data:`OMITTED_SUBPACKAGES` (``pydantic.v1``): what a probe of the layer blocks."""
    return sorted(f"{package}.{sub}" for package, sub in OMITTED_SUBPACKAGES)


def ignore_for_layer(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree`` ignore function for the layer's packages: the build host's bytecode, the model folders
    of the services not in :data:`BOTOCORE_SERVICES` (botocore's top-level files stay) and the omitted
    sub-packages."""
    ignored = set(IGNORED_FILES(folder, names))
    path = Path(folder)
    if path.name == "data" and path.parent.name == "botocore":
        ignored |= {name for name in names if (path / name).is_dir() and name not in BOTOCORE_SERVICES}
    ignored |= {sub for package, sub in OMITTED_SUBPACKAGES
                if path.name == package and sub in names and (path / "__init__.py").is_file()}
    return ignored


def slim_botocore_data(data: Path) -> dict[str, int]:
    """Drop the documentation of the service models under ``data`` (botocore's ``data`` folder, already without
    the unused services) and trim its ``endpoints.json`` to their endpoint prefixes, in place.

    Returns the bytes of ``endpoints.json`` and of the models before and after (for the build log)."""
    sizes = {"models_before": 0, "models_after": 0}
    prefixes: set[str] = set()
    for path in sorted(data.glob("*/*/service-2.json*")):
        model = _read(path)
        prefixes.add(model["metadata"]["endpointPrefix"])
        sizes["models_before"] += path.stat().st_size
        _write(path, without_docs(model))
        sizes["models_after"] += path.stat().st_size
    endpoints_path = next(p for p in (data / "endpoints.json", data / "endpoints.json.gz") if p.is_file())
    endpoints = _read(endpoints_path)
    sizes["endpoints_before"] = endpoints_path.stat().st_size
    _write(endpoints_path, endpoints_for(endpoints, prefixes))
    sizes["endpoints_after"] = endpoints_path.stat().st_size
    return sizes


def endpoints_for(endpoints: dict[str, Any], prefixes: set[str]) -> dict[str, Any]:
    """botocore's endpoints data with each partition's ``services`` cut to the given endpoint prefixes."""
    partitions = [{**partition, "services": {name: entry for name, entry in partition.get("services", {}).items()
                                             if name in prefixes}}
                  for partition in endpoints["partitions"]]
    return {**endpoints, "partitions": partitions}


def without_docs(model: dict[str, Any]) -> dict[str, Any]:
    """A service model without the documentation of the service, its operations, shapes and members.

    Walked by structure, not by key name: a member may itself be called ``documentation``, and the
    ``clientContextParams`` keep their documentation, which ``botocore.model`` reads as required."""
    slim = _drop_docs(model)
    slim["operations"] = {name: _drop_docs(op) for name, op in model.get("operations", {}).items()}
    shapes = {}
    for name, shape in model.get("shapes", {}).items():
        shape = _drop_docs(shape)
        if "members" in shape:
            shape["members"] = {member: _drop_docs(spec) for member, spec in shape["members"].items()}
        shapes[name] = shape
    slim["shapes"] = shapes
    return slim


def _drop_docs(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in _DOCS}


def _read(path: Path) -> dict[str, Any]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)


def _write(path: Path, data: dict[str, Any]) -> None:
    """Compact JSON, gzipped where botocore shipped the file gzipped (it reads either, by the file's name)."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)

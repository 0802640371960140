"""The layer's slimmed botocore and pydantic (``cdk.layer_slimming``): smaller data, the same clients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import botocore

from cdk.layer_slimming import (
    BOTOCORE_SERVICES,
    endpoints_for,
    ignore_for_layer,
    omitted_modules,
    slim_botocore_data,
    without_docs,
)

#: Regions of each partition a client resolves an endpoint in, FIPS included.
REGIONS = ("us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1")
#: What a client made from a botocore on ``sys.path[0]`` tells about itself, per service and region.
DESCRIBE = """
import json, sys
import botocore, botocore.session
from botocore.config import Config
session = botocore.session.get_session()
out = {"origin": botocore.__file__, "clients": {}}
for service in sys.argv[1].split(","):
    for region in sys.argv[2].split(","):
        for fips in (False, True):
            try:
                client = session.create_client(service, region_name=region, aws_access_key_id="k",
                                               aws_secret_access_key="s", config=Config(use_fips_endpoint=fips))
            except Exception as exc:  # the same failure on both sides is the same behaviour
                out["clients"][f"{service} {region} {fips}"] = type(exc).__name__
                continue
            model = client.meta.service_model
            first = model.operation_names[0]
            out["clients"][f"{service} {region} {fips}"] = {
                "endpoint": client.meta.endpoint_url, "region": client.meta.region_name,
                "signing": [model.signing_name, model.signature_version],
                "operations": model.operation_names,
                "inputs": {op: sorted(m.name for m in (model.operation_model(op).input_shape.members.values()
                                                       if model.operation_model(op).input_shape else []))
                           for op in model.operation_names},
                "doc": len(getattr(client, botocore.xform_name(first)).__doc__ or "") > 0,
            }
print(json.dumps(out))
"""


def _describe(site: Path | None, tmp_path: Path) -> dict:
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(site)} if site else {})}
    done = subprocess.run([sys.executable, "-c", DESCRIBE, ",".join(sorted(BOTOCORE_SERVICES)), ",".join(REGIONS)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _layer_botocore(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    site = tmp_path / "site"
    shutil.copytree(Path(botocore.__file__).parent, site / "botocore", ignore=ignore_for_layer)
    return site, slim_botocore_data(site / "botocore" / "data")


def test_slimmed_botocore_makes_the_same_clients_from_a_fraction_of_the_data(tmp_path: Path) -> None:
    # GIVEN botocore copied and slimmed as the layer ships it
    site, sizes = _layer_botocore(tmp_path)
    # THEN its endpoints file and its models are a fraction of the originals
    assert sizes["endpoints_after"] < sizes["endpoints_before"] / 20
    assert sizes["models_after"] < sizes["models_before"] / 2
    # AND a client of each kept service, in each partition, with and without FIPS, resolves the same endpoint,
    # signs the same way and has the same operations and parameters as with the full botocore; its methods
    # still have docstrings (botocore writes them from the model, without the prose now)
    slim, full = _describe(site, tmp_path), _describe(None, tmp_path)
    assert slim["origin"].startswith(str(site)) and not full["origin"].startswith(str(site))
    assert slim["clients"] == full["clients"]
    assert len(full["clients"]) == len(BOTOCORE_SERVICES) * len(REGIONS) * 2
    endpoints = {entry["endpoint"] for entry in full["clients"].values() if isinstance(entry, dict)}
    assert any(".amazonaws.com.cn" in url for url in endpoints) and any("fips" in url for url in endpoints)


def test_docs_are_dropped_by_structure_not_by_key_name() -> None:
    # GIVEN a model whose shape has a member called "documentation", and a client context parameter, which
    # botocore requires to have its documentation
    model = {
        "version": "2.0", "documentation": "The service.", "metadata": {"endpointPrefix": "x"},
        "clientContextParams": {"Accelerate": {"type": "boolean", "documentation": "Required by botocore."}},
        "operations": {"Put": {"name": "Put", "input": {"shape": "PutInput"}, "documentation": "Puts.",
                               "documentationUrl": "https://example.com"}},
        "shapes": {"PutInput": {"type": "structure", "documentation": "In.",
                                "members": {"documentation": {"shape": "String", "documentation": "A member."},
                                            "Name": {"shape": "String"}}},
                   "String": {"type": "string"}},
    }
    slim = without_docs(model)
    # THEN the prose is gone from the service, its operations, shapes and members, and nothing else
    assert "documentation" not in slim
    assert slim["operations"]["Put"] == {"name": "Put", "input": {"shape": "PutInput"}}
    assert slim["shapes"]["PutInput"] == {"type": "structure", "members": {"documentation": {"shape": "String"},
                                                                             "Name": {"shape": "String"}}}
    assert slim["clientContextParams"] == model["clientContextParams"]
    assert model["operations"]["Put"]["documentation"] == "Puts."  # the input is not changed


def test_endpoints_keep_the_named_prefixes_in_every_partition() -> None:
    endpoints = {"version": 3, "partitions": [
        {"partition": "aws", "regions": {"us-east-1": {}}, "services": {"dynamodb": {"a": 1}, "s3": {"b": 2}}},
        {"partition": "aws-cn", "regions": {"cn-north-1": {}}, "services": {"s3": {}}},
        {"partition": "aws-iso", "regions": {}},
    ]}
    slim = endpoints_for(endpoints, {"dynamodb"})
    assert [p["services"] for p in slim["partitions"]] == [{"dynamodb": {"a": 1}}, {}, {}]
    assert [p["regions"] for p in slim["partitions"]] == [p["regions"] for p in endpoints["partitions"]]
    assert endpoints["partitions"][0]["services"]["s3"] == {"b": 2}


def test_the_layer_copy_leaves_out_pydantic_v1_and_the_build_hosts_bytecode(tmp_path: Path) -> None:
    import pydantic

    # GIVEN pydantic copied as the layer copies its packages
    shutil.copytree(Path(pydantic.__file__).parent, tmp_path / "pydantic", ignore=ignore_for_layer)
    # THEN its v1 copy and any bytecode stayed behind, and everything else came
    assert omitted_modules() == ["pydantic.v1"]
    assert not (tmp_path / "pydantic" / "v1").exists()
    assert not list((tmp_path / "pydantic").rglob("__pycache__"))
    assert (tmp_path / "pydantic" / "main.py").is_file() and (tmp_path / "pydantic" / "deprecated").is_dir()


def test_a_v1_folder_of_another_package_is_kept(tmp_path: Path) -> None:
    # a "v1" folder of a package that is not pydantic (an API version, say) is not pydantic's copy
    other = tmp_path / "othersdk"
    (other / "v1").mkdir(parents=True)
    (other / "__init__.py").write_text("")
    assert ignore_for_layer(str(other), ["__init__.py", "v1"]) == set()

"""``clawdbot model``: check a model folder (``inspect``) and pack it for SageMaker (``package``).

``inspect`` loads the folder the way the server does (layout, JSON files, tokenizer, chat template, the ONNX
graph's inputs and outputs) and prints what it found, or exits non-zero with every problem named. ``package``
runs the same checks, then writes the ``model.tar.gz`` SageMaker unpacks into ``/opt/ml/model``: the folder's
files at the archive root, so ``/opt/ml/model/model.onnx`` exists after unpacking.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("model", help="Inspect or package an ONNX model folder.",
                            description="Work with model folders in the ONNX decoder layout "
                                        "(model.onnx, tokenizer.json, tokenizer_config.json, config.json).")
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION")
    commands.required = True

    inspect = commands.add_parser("inspect", help="Validate a model folder and describe it.",
                                  description="Load DIR as the server would and print its inputs/outputs, "
                                              "layers, context length and size. Exits 1 naming what is "
                                              "missing or wrong.")
    inspect.add_argument("model_dir", metavar="DIR", type=Path)
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(func=run_inspect)

    package = commands.add_parser("package", help="Validate DIR and write SageMaker's model.tar.gz.",
                                  description="Write OUT (a .tar.gz) with DIR's files at the archive root, "
                                              "as SageMaker unpacks it into /opt/ml/model.")
    package.add_argument("model_dir", metavar="DIR", type=Path)
    package.add_argument("output", metavar="OUT.tar.gz", type=Path)
    package.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    package.set_defaults(func=run_package)


def describe(model_dir: Path) -> dict[str, Any]:
    """Everything ``inspect`` reports; raises ``ModelLoadError`` for a non-conforming folder."""
    from tokenizers import Tokenizer

    from clawdbot.inference.exceptions import ModelLoadError
    from clawdbot.inference.onnx import ChatTemplate, DecoderEngine, GraphSpec, ModelFolder, RuntimeOptions
    from clawdbot.inference.onnx.runtime import create_session

    folder = ModelFolder.load(model_dir)
    try:
        tokenizer = Tokenizer.from_file(str(folder.path / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception on bad files
        raise ModelLoadError(f"tokenizer.json cannot be loaded: {exc}") from exc
    ChatTemplate(folder.chat_template)  # compiles: a syntax error is a load error
    session, device = create_session(folder.graph_path, RuntimeOptions(threads=1, providers=("CPUExecutionProvider",)))
    spec = GraphSpec.from_io(session.get_inputs(), session.get_outputs(), folder)
    engine = DecoderEngine(session, spec, device=device)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab > engine.vocab_size:
        raise ModelLoadError(f"tokenizer.json has {vocab} tokens but the model's logits cover only "
                             f"{engine.vocab_size}: they do not belong together")
    return {
        "path": str(folder.path),
        "graph": folder.graph_path.name,
        "external_data": [p.name for p in folder.data_paths],
        "inputs": [_io(i) for i in session.get_inputs()],
        "outputs": [_io(o) for o in session.get_outputs()],
        "layers": spec.num_layers,
        "kv_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "kv_dtype": spec.kv_dtype,
        "kv_cache": "in-place (fused attention)" if engine.in_place_cache else "concatenating",
        "position_ids": spec.position_ids is not None,
        "vocab_size": engine.vocab_size,
        "tokenizer_tokens": vocab,
        "context_length": folder.context_length,
        "eos_token_ids": list(folder.eos_token_ids()),
        "architecture": (folder.config.get("architectures") or [folder.config.get("model_type")])[0],
        "weights_bytes": folder.weights_bytes,
        "size_bytes": folder.size_bytes,
        "files": [str(p.relative_to(folder.path)) for p in folder.files],
    }


def _io(value: Any) -> dict[str, Any]:
    return {"name": value.name, "type": value.type.removeprefix("tensor(").removesuffix(")"),
            "shape": list(value.shape)}


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def run_inspect(args: argparse.Namespace) -> int:
    info = describe(args.model_dir)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model folder   {info['path']}  ({info['architecture']})")
    print(f"graph          {info['graph']}" + (f" + {', '.join(info['external_data'])}" if info["external_data"]
                                                else ""))
    print(f"size           {_size(info['size_bytes'])} ({_size(info['weights_bytes'])} graph + weights)")
    print(f"context length {info['context_length']} tokens")
    print(f"layers         {info['layers']} ({info['kv_heads']} KV heads x {info['head_dim']}, "
          f"{info['kv_dtype']} cache, {info['kv_cache']})")
    print(f"vocabulary     {info['vocab_size']} logits, {info['tokenizer_tokens']} tokenizer tokens; "
          f"EOS ids {info['eos_token_ids']}")
    print("inputs")
    for item in info["inputs"]:
        print(f"  {item['name']:<28} {item['type']:<8} {item['shape']}")
    print("outputs")
    for item in info["outputs"]:
        print(f"  {item['name']:<28} {item['type']:<8} {item['shape']}")
    return 0


def run_package(args: argparse.Namespace) -> int:
    from clawdbot.cli.main import CommandError

    output: Path = args.output
    if not output.name.endswith(".tar.gz"):
        raise CommandError(f"OUT must end with .tar.gz (SageMaker expects model.tar.gz), got {output}")
    if output.exists() and not args.force:
        raise CommandError(f"{output} exists; pass --force to overwrite it")
    model_dir = args.model_dir.resolve()
    if output.resolve().is_relative_to(model_dir):
        raise CommandError("OUT must not be inside DIR (the archive would contain itself)")
    info = describe(model_dir)  # never package a folder the server cannot load
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        with tarfile.open(partial, "w:gz") as archive:
            for name in info["files"]:
                archive.add(model_dir / name, arcname=name, recursive=False, filter=_normalize)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {output} ({_size(output.stat().st_size)}, {len(info['files'])} files: "
          f"{', '.join(info['files'])})")
    return 0


def _normalize(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner-neutral, world-readable entries: the container's user must be able to read them."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = 0o644 if member.isfile() else 0o755
    return member

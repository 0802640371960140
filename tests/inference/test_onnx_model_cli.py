"""``clawdbot model inspect|package`` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from typing import TYPE_CHECKING

from clawdbot.cli.main import main
from clawdbot.inference.types import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_inspect_describes_a_good_folder(llama_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "inspect", str(llama_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 2
    assert (info["kv_heads"], info["head_dim"]) == (2, 16)
    assert info["context_length"] == 192
    assert info["external_data"] == ["model.onnx_data"]
    assert {i["name"] for i in info["inputs"]} >= {"input_ids", "attention_mask", "position_ids",
                                                    "past_key_values.1.value"}
    assert info["kv_cache"] == "concatenating"


def test_inspect_console_script_on_the_genai_build(genai_dir: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", "model", "inspect", str(genai_dir)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "in-place (fused attention)" in result.stdout
    assert "past_key_values.0.key" in result.stdout


def _broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_inspect_names_a_missing_tokenizer(llama_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken_copy(llama_dir, tmp_path / "no-tokenizer")
    (broken / "tokenizer.json").unlink()
    assert main(["model", "inspect", str(broken)]) != 0
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "missing" in err


def test_inspect_names_wrong_graph_inputs(llama_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    # GIVEN a graph whose token input is called "tokens" instead of "input_ids"
    broken = _broken_copy(llama_dir, tmp_path / "renamed-input")
    graph = onnx.load(str(broken / "model.onnx"))  # external data loaded too; saved back in one file
    for value in graph.graph.input:
        if value.name == "input_ids":
            value.name = "tokens"
    for node in graph.graph.node:
        node.input[:] = ["tokens" if name == "input_ids" else name for name in node.input]
    (broken / "model.onnx_data").unlink()
    onnx.save(graph, str(broken / "model.onnx"))
    # WHEN inspecting it THEN it fails, naming both the missing and the unexpected input
    assert main(["model", "inspect", str(broken)]) != 0
    err = capsys.readouterr().err
    assert "input 'input_ids' is missing" in err
    assert "tokens" in err


def test_inspect_rejects_a_folder_without_chat_template(llama_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = _broken_copy(llama_dir, tmp_path / "no-template")
    config_path = broken / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config_path.write_text(json.dumps(config))
    assert main(["model", "inspect", str(broken)]) != 0
    assert "chat_template" in capsys.readouterr().err


def test_inspect_rejects_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "inspect", str(tmp_path / "nope")]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_package_unpacks_to_a_servable_folder(llama_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from clawdbot.inference.onnx import OnnxBackend

    archive = tmp_path / "out" / "model.tar.gz"
    assert main(["model", "package", str(llama_dir), str(archive)]) == 0
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"model.onnx", "model.onnx_data", "tokenizer.json", "tokenizer_config.json", "config.json"} <= names
        assert all("/" not in n for n in names)  # files at the root: /opt/ml/model/model.onnx
        unpacked = tmp_path / "opt-ml-model"
        tar.extractall(unpacked, filter="data")
    # the unpacked folder serves the same greedy completion as the original
    params = GenerationParams(max_tokens=8, temperature=0.0)
    messages = [ChatMessage("user", "Hello!")]
    assert OnnxBackend(unpacked).generate(messages, params) == OnnxBackend(llama_dir).generate(messages, params)
    # a second run refuses to overwrite without --force
    assert main(["model", "package", str(llama_dir), str(archive)]) == 2
    assert "--force" in capsys.readouterr().err


def test_package_refuses_a_broken_folder(llama_dir: Path, tmp_path: Path) -> None:
    broken = _broken_copy(llama_dir, tmp_path / "broken")
    (broken / "config.json").unlink()
    archive = tmp_path / "model.tar.gz"
    assert main(["model", "package", str(broken), str(archive)]) != 0
    assert not archive.exists()


def test_a_command_error_is_a_message_when_run_as_a_module(tmp_path: Path) -> None:
    # ``python -m clawdbot.cli.main`` runs the file as __main__, a second copy of the module: the commands' errors
    # must still be caught as the console script catches them (a message and status 2, not a traceback)
    done = subprocess.run([sys.executable, "-m", "clawdbot.cli.main", "serve", "--port", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "clawdbot: error: --port must be between 1 and 65535, got 0\n"

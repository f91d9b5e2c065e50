"""The README's `buf generate` templates for Go and Java (buf.gen.go.yaml, buf.gen.java.yaml)
drive the plugins they name with the options they promise. Offline: stand-in plugins and a
stand-in protoc on PATH record what buf hands them (the CodeGeneratorRequest, or protoc's
descriptor set) and generate nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from test_proto import buf

PROTO = "banditroute/v1/router.proto"

_PLUGIN = """#!{python}
import json, os, sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
record = {{
    "tool": os.path.basename(sys.argv[0]),
    "parameter": request.parameter,
    "files": list(request.file_to_generate),
    "options": {{
        f.name: {{"go_package": f.options.go_package}}
        for f in request.proto_file if f.name in request.file_to_generate
    }},
}}
with open(os.path.join(os.environ["STUB_LOG"], record["tool"] + ".json"), "w") as out:
    json.dump(record, out)
response = plugin_pb2.CodeGeneratorResponse(
    supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
)
sys.stdout.buffer.write(response.SerializeToString())
"""

_PROTOC = """#!{python}
import json, os, sys
from google.protobuf import descriptor_pb2
if sys.argv[1:] == ["--version"]:
    print("libprotoc 29.3")
    sys.exit(0)
files = descriptor_pb2.FileDescriptorSet.FromString(sys.stdin.buffer.read()).file
record = {{
    "tool": "protoc",
    "argv": sys.argv[1:],
    "options": {{
        f.name: {{
            "java_package": f.options.java_package,
            "java_multiple_files": f.options.java_multiple_files,
        }}
        for f in files
    }},
}}
with open(os.path.join(os.environ["STUB_LOG"], "protoc.json"), "w") as out:
    json.dump(record, out)
"""


def _generate(template: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run `buf generate --template TEMPLATE` with the stand-ins first on PATH; return what
    each stand-in recorded, by tool name."""
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log_dir.mkdir()
    stubs = {name: _PLUGIN for name in ("protoc-gen-go", "protoc-gen-go-grpc")}
    stubs |= {"protoc-gen-grpc-java": _PLUGIN, "protoc": _PROTOC}
    for name, source in stubs.items():
        path = bin_dir / name
        path.write_text(source.format(python=sys.executable))
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "STUB_LOG": str(log_dir),
    }
    result = buf("generate", "--template", template, "--output", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, f"buf generate failed:\n{result.stdout}{result.stderr}"
    assert "WARN" not in result.stderr, result.stderr
    return {path.stem: json.loads(path.read_text()) for path in log_dir.glob("*.json")}


def test_the_go_template_runs_protoc_gen_go_and_go_grpc_with_a_managed_go_package(
    tmp_path: Path,
) -> None:
    """buf.gen.go.yaml runs protoc-gen-go and protoc-gen-go-grpc from PATH on the proto with
    ``paths=source_relative``, and managed mode gives the file a go_package under the
    template's prefix (the proto itself names none)."""
    calls = _generate("buf.gen.go.yaml", tmp_path)
    assert set(calls) == {"protoc-gen-go", "protoc-gen-go-grpc"}
    for call in calls.values():
        assert call["files"] == [PROTO]
        assert call["parameter"] == "paths=source_relative"
        go_package = call["options"][PROTO]["go_package"]
        assert go_package.startswith("example.com/yourapp/gen/go/banditroute/v1")


def test_the_java_template_runs_protoc_java_and_grpc_java_with_a_managed_java_package(
    tmp_path: Path,
) -> None:
    """buf.gen.java.yaml runs protoc's built-in Java generator and protoc-gen-grpc-java from
    PATH, with managed mode's java_package ``ai.banditroute.v1`` and java_multiple_files."""
    calls = _generate("buf.gen.java.yaml", tmp_path)
    assert set(calls) == {"protoc", "protoc-gen-grpc-java"}
    protoc = calls["protoc"]
    assert any(arg.startswith("--java_out=") for arg in protoc["argv"])
    assert protoc["options"][PROTO] == {
        "java_package": "ai.banditroute.v1",
        "java_multiple_files": True,
    }
    assert calls["protoc-gen-grpc-java"]["files"] == [PROTO]

"""Builds sluice-client, generating the gRPC stubs from the repository's
proto/ directory first. Set SLUICE_PROTO_DIR to build from elsewhere."""

import os
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = "sluice/v1/gateway.proto"


def proto_dir() -> Path:
    found = Path(os.environ.get("SLUICE_PROTO_DIR", HERE.parent.parent / "proto"))
    if not (found / PROTO).is_file():
        raise SystemExit(
            f"sluice-client: {found / PROTO} not found. Build from a checkout of "
            "sluice (pip install ./clients/python) or set SLUICE_PROTO_DIR to "
            "its proto/ directory."
        )
    return found


class BuildWithStubs(build_py):
    """Runs protoc (from grpcio-tools) into the build tree, as the module
    sluice_client._pb.gateway_pb2 (the protobuf package stays sluice.v1)."""

    def run(self) -> None:
        super().run()
        from grpc_tools import protoc  # a build requirement

        out = Path(self.build_lib)
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "sluice_client" / "_pb"
            staged.mkdir(parents=True)
            shutil.copy(proto_dir() / PROTO, staged / "gateway.proto")
            include = Path(protoc.__file__).parent / "_proto"
            status = protoc.main(
                [
                    "grpc_tools.protoc",
                    f"-I{tmp}",
                    f"-I{include}",
                    f"--python_out={out}",
                    f"--pyi_out={out}",
                    f"--grpc_python_out={out}",
                    "sluice_client/_pb/gateway.proto",
                ]
            )
            if status != 0:
                raise SystemExit(f"sluice-client: protoc failed with status {status}")
        (out / "sluice_client" / "_pb" / "__init__.py").write_text(
            '"""Generated from proto/sluice/v1/gateway.proto at build time."""\n'
        )


setup(cmdclass={"build_py": BuildWithStubs})

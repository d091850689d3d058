"""Regenerate ``sync_pb2.py``/``.pyi`` from ``proto/kora/sync/v1/sync.proto``.

Run from the repository root::

    .venv/bin/python -m kora.protocol._pb.regenerate

It runs grpcio-tools' bundled ``protoc`` with ``-Iproto`` into a temporary directory and copies
the two generated files next to this module.  The generated module imports nothing but the
protobuf runtime, so it works from this package.  Generated code must never be newer than the
installed protobuf runtime (tests/protocol check the gencode version line).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PROTO_ROOT = REPO / "proto"
PROTO_FILE = Path("kora/sync/v1/sync.proto")
GENERATED = ("sync_pb2.py", "sync_pb2.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Generate the Python module into ``out_dir`` and return the paths of the files."""
    from grpc_tools import protoc  # dev dependency, needed only here

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        produced = Path(tmp) / PROTO_FILE.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in GENERATED:
            target = out_dir / name
            shutil.copyfile(produced / name, target)
            paths.append(target)
    return paths


def main() -> int:
    for path in generate(HERE):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

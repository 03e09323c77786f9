"""Generate the Python code for the wire contract from ``protos/counterguard/v1/*.proto``.

Run ``python -m protos.generate`` (``make protos``) after editing a ``.proto`` file and commit
the result. ``--out DIR`` writes into another folder, which is how the drift test checks that
the committed code matches the ``.proto`` files. The repository root is the include path, so
the generated modules import each other as ``protos.counterguard.v1.…``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos" / "counterguard" / "v1"


def proto_files() -> list[Path]:
    """The ``.proto`` files of the contract, in a stable order."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write ``_pb2.py``, ``_pb2.pyi`` and ``_pb2_grpc.py`` for every proto file under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={REPO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(REPO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository)")
    generate(parser.parse_args(argv).out)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The committed generated code must be exactly what the pinned grpcio-tools makes from the .proto files."""

from __future__ import annotations

import filecmp
from pathlib import Path

from protos import generate
from protos.counterguard.v1 import agent_pb2, facts_pb2

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh_dir = tmp_path / "protos" / "counterguard" / "v1"
    fresh = sorted(p.name for p in fresh_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
    committed = sorted(p.name for p in generate.PROTO_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
    assert fresh == committed, "generated files added or removed: run `make protos` and commit"
    stale = [name for name in fresh if not filecmp.cmp(fresh_dir / name, generate.PROTO_DIR / name, shallow=False)]
    assert not stale, f"out of date with the .proto files: {stale}; run `make protos` and commit"


def test_fact_kinds_are_one_oneof_with_a_sequence_and_a_time() -> None:
    fact = facts_pb2.Fact.DESCRIPTOR
    assert [f.name for f in fact.fields[:2]] == ["sequence", "observed_at"]
    kinds = {f.name for f in fact.oneofs_by_name["kind"].fields}
    assert {"inventory", "software_snapshot", "software_delta", "process_started", "process_stopped",
            "session", "power"} <= kinds


def test_agent_service_has_the_three_calls() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert [m.name for m in service.methods] == ["Enroll", "Report", "FetchPolicy"]

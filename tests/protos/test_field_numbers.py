"""Field numbers are never reused: every field recorded in ``field_numbers.json`` keeps its number,
and a field that is removed must leave its number reserved.

After adding fields, record them with ``python tests/protos/test_field_numbers.py --record``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FileDescriptor

from protos.counterguard.v1 import agent_pb2, facts_pb2

RECORD = Path(__file__).with_name("field_numbers.json")


def _messages(descriptor: FileDescriptor | Descriptor) -> list[Descriptor]:
    found: list[Descriptor] = []
    for message in descriptor.message_types_by_name.values() if isinstance(descriptor, FileDescriptor) else descriptor.nested_types:
        found.append(message)
        found.extend(_messages(message))
    return found


def current_numbers() -> dict[str, dict[str, int]]:
    numbers: dict[str, dict[str, int]] = {}
    for module in (facts_pb2, agent_pb2):
        for message in _messages(module.DESCRIPTOR):
            numbers[message.full_name] = {field.name: field.number for field in message.fields}
    return numbers


def _reserved_numbers(full_name: str) -> set[int]:
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.DescriptorProto()
    descriptor_pool.Default().FindMessageTypeByName(full_name).CopyToProto(proto)
    return {n for r in proto.reserved_range for n in range(r.start, r.end)}


def test_no_field_number_changes_or_is_dropped_without_reservation() -> None:
    recorded: dict[str, dict[str, int]] = json.loads(RECORD.read_text())
    now = current_numbers()
    problems = []
    for message, fields in recorded.items():
        current = now.get(message, {})
        for name, number in fields.items():
            if name in current and current[name] != number:
                problems.append(f"{message}.{name} was {number}, is now {current[name]}")
            elif name not in current and number not in _reserved_numbers(message):
                problems.append(f"{message}.{name} ({number}) was removed without `reserved {number};`")
        reused = {n for f, n in current.items() if f not in fields} & set(fields.values())
        problems.extend(f"{message}: number {n} reused by a new field" for n in sorted(reused))
    assert not problems, "; ".join(problems)


def test_record_is_up_to_date() -> None:
    recorded = json.loads(RECORD.read_text())
    missing = [f"{m}.{f}" for m, fs in current_numbers().items() for f in fs if f not in recorded.get(m, {})]
    assert not missing, f"new fields not recorded (run this file with --record): {missing}"


if __name__ == "__main__" and "--record" in sys.argv:
    merged = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for message, fields in current_numbers().items():
        merged.setdefault(message, {}).update(fields)
    RECORD.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")

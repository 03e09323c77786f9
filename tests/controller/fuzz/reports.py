"""Hypothesis strategies for what an agent (or someone pretending to be one) can send in a Report.

:func:`facts` draws valid facts of several kinds with random text and numbers; :func:`mutated_batches`
breaks some of them (huge strings, sequences out of order, missing or impossible fields, a kind this
controller does not know, long nested lists); :func:`report_bytes` serializes a batch and may then
damage the bytes, or be random bytes altogether.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from protos.counterguard.v1 import agent_pb2, facts_pb2

UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
NOW = dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC)

# protobuf strings hold Unicode scalar values: any character except lone surrogates.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
short_lists = {"min_size": 0, "max_size": 3}


def _process() -> st.SearchStrategy[facts_pb2.ProcessInfo]:
    return st.builds(facts_pb2.ProcessInfo, pid=st.integers(0, UINT32), name=text, executable=text)


def _software_item() -> st.SearchStrategy[facts_pb2.SoftwareItem]:
    return st.builds(facts_pb2.SoftwareItem, source=st.integers(0, 5), name=text, version=text,
                     categories=st.lists(text, **short_lists))


def _usb() -> st.SearchStrategy[facts_pb2.UsbDevice]:
    return st.builds(facts_pb2.UsbDevice, serial=text, device_class=st.integers(0, 12),
                     interface_classes=st.lists(st.integers(0, 12), **short_lists))


def _kind() -> st.SearchStrategy[dict[str, object]]:
    """One ``kind`` of a fact, as keyword arguments for ``facts_pb2.Fact``."""
    return st.one_of(
        st.builds(lambda kind: {"power": facts_pb2.PowerEvent(kind=kind)}, st.integers(0, 5)),
        st.builds(lambda p: {"process_started": facts_pb2.ProcessStarted(process=p)}, _process()),
        st.builds(lambda ps: {"process_snapshot": facts_pb2.ProcessSnapshot(processes=ps)},
                  st.lists(_process(), **short_lists)),
        st.builds(lambda added, removed: {"software_delta": facts_pb2.SoftwareDelta(added=added, removed=removed)},
                  st.lists(_software_item(), **short_lists), st.lists(_software_item(), **short_lists)),
        st.builds(lambda host, usb: {"inventory": facts_pb2.InventorySnapshot(hostname=host, usb_devices=usb)},
                  text, st.lists(_usb(), **short_lists)),
        st.builds(lambda n, dropped, reason: {"outbox_notice": facts_pb2.OutboxNotice(set_aside=n, dropped=dropped,
                                                                                      reason=reason)},
                  st.integers(0, UINT64), st.dictionaries(text, st.integers(0, UINT64), max_size=5), text),
        st.builds(lambda category, title: {"foreground": facts_pb2.ForegroundWindow(category=category, title=title)},
                  text, text),
    )


KIND = _kind()
_FIRST_SEQUENCE, _COUNT, _STEP = st.integers(1, 40), st.integers(0, 6), st.integers(1, 3)
_OBSERVED = st.integers(-86_400 * 365, 86_400)


@st.composite
def facts(draw: st.DrawFn) -> list[facts_pb2.Fact]:
    """A valid batch: 0 to 6 facts with strictly increasing sequence numbers (from 1 to 40 on)."""
    sequence = draw(_FIRST_SEQUENCE)
    batch = []
    for _ in range(draw(_COUNT)):
        fact = facts_pb2.Fact(sequence=sequence, **draw(KIND))  # type: ignore[arg-type]
        fact.observed_at.FromDatetime(NOW + dt.timedelta(seconds=draw(_OBSERVED)))
        batch.append(fact)
        sequence += draw(_STEP)
    return batch


def _break_one(draw: st.DrawFn, batch: list[facts_pb2.Fact]) -> None:
    """Damage one fact of a non-empty batch in one of the ways a broken or hostile agent could."""
    fact = batch[draw(st.integers(0, len(batch) - 1))]
    damage = draw(st.sampled_from([
        "huge string", "zero sequence", "giant sequence", "no observed_at", "bad seconds", "bad nanos", "no kind",
        "unknown kind", "long list", "many map entries",
    ]))
    if damage == "huge string":
        fact.foreground.title = draw(st.sampled_from(["x", "窗", "😀"])) * draw(st.integers(4097, 20_000))
    elif damage == "zero sequence":
        fact.sequence = 0
    elif damage == "giant sequence":
        fact.sequence = draw(st.integers(2**63, UINT64))
    elif damage == "no observed_at":
        fact.ClearField("observed_at")
    elif damage == "bad seconds":
        fact.observed_at.seconds = draw(st.one_of(st.integers(-(2**63), -62_135_596_801),
                                                  st.integers(253_402_300_800, 2**63 - 1)))
    elif damage == "bad nanos":
        fact.observed_at.nanos = draw(st.one_of(st.integers(-(2**31), -1), st.integers(10**9, 2**31 - 1)))
    elif damage in ("no kind", "unknown kind"):
        fact.ClearField(fact.WhichOneof("kind") or "power")
        if damage == "unknown kind":  # field 99: what a newer agent might send
            fact.MergeFromString(b"\x9a\x06" + bytes([3]) + b"new")
    elif damage == "long list":
        size = draw(st.integers(50, 3000))
        fact.process_snapshot.processes.extend(facts_pb2.ProcessInfo(pid=n, name="p") for n in range(size))
    else:
        for n in range(draw(st.integers(200, 400))):
            fact.outbox_notice.dropped[f"kind-{n}"] = n


@st.composite
def mutated_batches(draw: st.DrawFn) -> list[facts_pb2.Fact]:
    """A batch that is valid, or has one fact damaged, or has its order broken."""
    batch = draw(facts())
    change = draw(st.sampled_from(["none", "damage", "shuffle", "repeat"]))
    if batch and change == "damage":
        _break_one(draw, batch)
    elif len(batch) > 1 and change == "shuffle":
        batch = draw(st.permutations(batch))
    elif batch and change == "repeat":
        batch.insert(draw(st.integers(0, len(batch))), draw(st.sampled_from(batch)))
    return batch


@st.composite
def report_bytes(draw: st.DrawFn) -> bytes:
    """A serialized ReportRequest, perhaps damaged, or random bytes."""
    choice = draw(st.sampled_from(["batch", "batch", "flipped", "truncated", "spliced", "random", "oversized"]))
    if choice == "random":
        return draw(st.binary(max_size=2048))
    request = agent_pb2.ReportRequest(facts=draw(mutated_batches()), agent_version=draw(text))
    raw = bytearray(request.SerializeToString())
    if choice == "oversized":  # beyond the server's message size limit
        raw += b"\x12" + _varint(300_000) + b"v" * 300_000
    elif raw and choice == "flipped":
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif raw and choice == "truncated":
        del raw[draw(st.integers(0, len(raw) - 1)):]
    elif choice == "spliced":
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(raw)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)

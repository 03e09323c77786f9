"""The SQLite outbox: numbering that never repeats, durability, bounds, set-aside and notices."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from agent.errors import OutboxError
from agent.outbox import Outbox, kind_label
from protos.counterguard.v1 import facts_pb2

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT)


def started(pid: int, name: str = "bash") -> facts_pb2.ProcessStarted:
    return facts_pb2.ProcessStarted(process=facts_pb2.ProcessInfo(pid=pid, name=name))


def notices(box: Outbox) -> list[facts_pb2.OutboxNotice]:
    return [f.outbox_notice for f in box.head(10_000, 1 << 30) if f.WhichOneof("kind") == "outbox_notice"]


def test_put_wraps_numbers_and_stamps_a_fact(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        assert box.put(started(10)) == 1
        assert box.put(HEARTBEAT, observed_at=clock() - dt.timedelta(minutes=1)) == 2
        first, second = box.head(10, 1 << 20)
    assert first.WhichOneof("kind") == "process_started" and first.process_started.process.pid == 10
    assert first.sequence == 1 and first.observed_at.ToDatetime(dt.UTC) == clock()
    assert second.WhichOneof("kind") == "power" and second.sequence == 2
    assert second.observed_at.ToDatetime(dt.UTC) == clock() - dt.timedelta(minutes=1)


def test_put_refuses_what_is_not_a_fact_kind_and_naive_times(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        with pytest.raises(OutboxError, match="counterguard.v1.ProcessInfo is not a kind of Fact"):
            box.put(facts_pb2.ProcessInfo(pid=1))
        with pytest.raises(OutboxError, match="has no time zone"):
            box.put(HEARTBEAT, observed_at=dt.datetime(2026, 1, 1))
        assert box.depth() == 0 and box.stats().next_sequence == 1


def test_put_many_is_one_transaction_with_its_meta(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        assert box.put_many([started(1), started(2), HEARTBEAT], meta={"boot_time": "x"}) == [1, 2, 3]
        assert box.get_meta("boot_time") == "x"
        with pytest.raises(OutboxError):
            box.put_many([started(3), facts_pb2.ProcessInfo()], meta={"boot_time": "y"})
        assert box.depth() == 3 and box.get_meta("boot_time") == "x"  # nothing of the failed call stored


def test_head_respects_count_and_bytes_but_returns_at_least_one(tmp_path: Path, clock) -> None:
    big = facts_pb2.ProcessSnapshot(processes=[facts_pb2.ProcessInfo(pid=i, name="x" * 100) for i in range(100)])
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        box.put(big)
        box.put_many([started(i) for i in range(1, 11)])  # all the same size
        assert [f.sequence for f in box.head(100, 100)] == [1]  # bigger than max_bytes, still sent alone
        box.acknowledge(1)
        assert [f.sequence for f in box.head(3, 1 << 20)] == [2, 3, 4]
        size = box.head(1, 1 << 20)[0].ByteSize()
        assert len(box.head(100, size * 4 + 1)) == 4


def test_acknowledge_deletes_up_to_the_sequence(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        box.put_many([started(i) for i in range(5)])
        assert box.acknowledge(3) == 3
        assert [f.sequence for f in box.head(10, 1 << 20)] == [4, 5]
        assert box.acknowledge(3) == 0


def test_sequences_never_repeat_after_reopen_and_an_emptied_table(tmp_path: Path, clock) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, clock=clock) as box:
        box.put_many([started(i) for i in range(3)])
        box.acknowledge(3)
        assert box.depth() == 0
        assert box.put(started(9)) == 4  # not 1: the counter is not max(rowid)
        box.acknowledge(4)
    with Outbox(path, clock=clock) as box:
        assert box.stats().next_sequence == 5
        assert box.put(started(10)) == 5


CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from agent.outbox import Outbox
    from protos.counterguard.v1 import facts_pb2

    box = Outbox(sys.argv[1])
    def put_forever():
        while True:
            seq = box.put(facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT))
            print(seq, flush=True)
            if seq % 7 == 0:
                box.acknowledge(seq)  # empty the table now and then
    threading.Thread(target=put_forever, daemon=True).start()
    threading.Event().wait(float(sys.argv[2]))
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)
    """
)


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_sequences_never_repeat_after_a_crash(tmp_path: Path, how: str) -> None:
    path = tmp_path / "o.db"
    committed: list[int] = []
    for _ in range(3):  # crash, reopen, crash again
        run = subprocess.run([sys.executable, "-c", CHILD, str(path), "0.3", how], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == (-9 if how == "kill" else 1), run.stderr
        printed = [int(line) for line in run.stdout.split()]
        assert printed, "the child committed nothing before it died"
        assert not committed or printed[0] > committed[-1]
        committed += printed
    with Outbox(path) as box:
        stored = [f.sequence for f in box.head(1_000_000, 1 << 40)]
        next_sequence = box.stats().next_sequence
        assert next_sequence > max(committed + stored)
        assert box.put(HEARTBEAT) == next_sequence
    assert len(committed) == len(set(committed))
    assert set(committed) - set(range(1, next_sequence)) == set()


def test_wal_and_full_synchronous_are_on(tmp_path: Path, clock) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, clock=clock) as box:
        box.put(HEARTBEAT)
        assert (tmp_path / "o.db-wal").exists()
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()


def test_a_full_outbox_drops_heartbeats_first_and_says_so(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", max_facts=100, clock=clock) as box:
        for i in range(60):
            box.put(HEARTBEAT)
            box.put(started(i))
        facts = box.head(1000, 1 << 30)
        kinds = [kind_label(f) for f in facts]
        assert len(facts) == 100
        assert kinds.count("process_started") == 60  # all kept: heartbeats went first
        assert kinds.count("heartbeat") == 39 and kinds.count("outbox_notice") == 1
        assert kinds[-1] == "outbox_notice"
        (notice,) = notices(box)
        assert dict(notice.dropped) == {"heartbeat": 21}
        assert box.stats().dropped == {"heartbeat": 21}


def test_when_no_heartbeats_are_left_the_oldest_facts_go_but_never_the_notice(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", max_facts=100, clock=clock) as box:
        box.put_many([HEARTBEAT] * 5)
        box.put_many([started(i) for i in range(150)])
        facts = box.head(1000, 1 << 30)
        assert len(facts) == 100
        processes = [f.process_started.process.pid for f in facts if f.WhichOneof("kind") == "process_started"]
        assert processes == list(range(51, 150))  # the newest 99; the oldest went
        (notice,) = notices(box)
        assert dict(notice.dropped) == {"heartbeat": 5, "process_started": 51}
        box.put(started(999))  # full again: one more goes, the notice is replaced, not added
        (notice,) = notices(box)
        assert dict(notice.dropped) == {"heartbeat": 5, "process_started": 52}
        assert box.depth() == 100
        sequences = [f.sequence for f in box.head(1000, 1 << 30)]
        assert sequences == sorted(sequences) and len(set(sequences)) == 100


def test_set_aside_moves_the_facts_and_queues_a_notice(tmp_path: Path, clock) -> None:
    path = tmp_path / "o.db"
    with Outbox(path, clock=clock) as box:
        box.put_many([started(i) for i in range(5)])
        batch = box.head(3, 1 << 20)
        assert box.set_aside(batch, "fact 2: process name is empty") == 3
        remaining = box.head(100, 1 << 20)
        assert [f.sequence for f in remaining] == [4, 5, 6]
        assert remaining[-1].outbox_notice == facts_pb2.OutboxNotice(set_aside=3, reason="fact 2: process name is empty")
        stats = box.stats()
        assert (stats.set_aside, stats.set_aside_reason, stats.depth) == (3, "fact 2: process name is empty", 3)
    rows = sqlite3.connect(path).execute("SELECT sequence, kind, reason FROM set_aside ORDER BY sequence").fetchall()
    assert rows == [(i, "process_started", "fact 2: process name is empty") for i in (1, 2, 3)]


def test_a_rejected_notice_alone_does_not_breed_another(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        box.put(started(1))
        box.set_aside(box.head(1, 1 << 20), "bad")
        notice = box.head(10, 1 << 20)
        assert [f.WhichOneof("kind") for f in notice] == ["outbox_notice"]
        assert box.set_aside(notice, "notices not understood") == 1
        assert box.depth() == 0 and box.stats().set_aside == 2


def test_renumber_moves_only_the_named_facts_past_the_controllers_number(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        box.put_many([started(i) for i in range(4)])  # sequences 1..4
        assert box.renumber([2, 4, 99], above=500) == 2  # 99 is not waiting: ignored
        facts = box.head(10, 1 << 20)
        assert [(f.sequence, f.process_started.process.pid) for f in facts] == [(1, 0), (3, 2), (501, 1), (502, 3)]
        assert box.put(HEARTBEAT) == 503 and box.last_sequence() == 503


def test_skip_past_moves_only_future_numbers(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        box.put(started(1))
        box.skip_past(40)
        box.skip_past(7)  # never backwards
        assert [f.sequence for f in box.head(10, 1 << 20)] == [1]
        assert box.put(HEARTBEAT) == 41


def test_stats_and_meta(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        empty = box.stats()
        assert (empty.depth, empty.oldest_sequence, empty.oldest_observed_at, empty.next_sequence) == (0, None, None, 1)
        box.put(started(1))
        clock.advance(minutes=5)
        box.put(started(2))
        stats = box.stats()
        assert (stats.depth, stats.oldest_sequence, stats.next_sequence) == (2, 1, 3)
        assert stats.oldest_observed_at == clock() - dt.timedelta(minutes=5)
        assert box.get_meta("last_report_at") is None
        box.set_meta("last_report_at", "2026-11-02T01:30:00+00:00")
        assert box.get_meta("last_report_at") == "2026-11-02T01:30:00+00:00"


def test_threads_share_one_outbox_without_repeating_a_number(tmp_path: Path, clock) -> None:
    with Outbox(tmp_path / "o.db", clock=clock) as box:
        results: list[list[int]] = [[] for _ in range(4)]

        def work(slot: int) -> None:
            for i in range(50):
                results[slot].append(box.put(started(i)))
                if i % 10 == 0:
                    box.head(20, 1 << 20)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        everything = [seq for chunk in results for seq in chunk]
        assert sorted(everything) == list(range(1, 201))
        assert all(chunk == sorted(chunk) for chunk in results)


def test_an_unusable_database_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=f"{path}: cannot open the outbox database"):
        Outbox(path)
    assert os.path.exists(path)

"""The Windows power back end: the event XML parsed, the boot time chosen, the event log read through ``wevtapi``.

:class:`~tests.agent.windows.fake_win32.FakeWindows` is the OS boundary (tick counts and a System log of
hand-made events in ``EvtRender``'s shape); the clock is injected. That a shutdown notice from the Service
Control Manager makes ``system_is_stopping`` true is shown in ``test_windows_agent.py``, with the real service.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from agent.collectors import _eventlog_windows as evt
from agent.collectors import _power_windows as win
from tests.agent.windows.fake_win32 import RPC_S_SERVER_UNAVAILABLE, FakeWindows, kernel_boot_event, service_stop_event

NOW = dt.datetime(2026, 11, 30, 1, 30, tzinfo=dt.UTC)  # 09:30 in Shanghai
HOUR = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def at(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


@pytest.fixture
def windows() -> FakeWindows:
    return FakeWindows()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def boot_clock(windows: FakeWindows, clock: Clock) -> win.BootClock:
    return win.BootClock(ticks=windows, events=windows, clock=clock)


# ------------------------------------------------------------------------------------ the event XML


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-30T00:41:07.4870853Z", dt.datetime(2026, 11, 30, 0, 41, 7, 487085, tzinfo=dt.UTC)),  # Windows 10/11
    ("2015-03-02T08:00:01.000000000Z", dt.datetime(2015, 3, 2, 8, 0, 1, tzinfo=dt.UTC)),  # nine decimals
    ("2026-11-30T00:41:07Z", dt.datetime(2026, 11, 30, 0, 41, 7, tzinfo=dt.UTC)),
    ("2026-11-30T00:41:07.5Z", dt.datetime(2026, 11, 30, 0, 41, 7, 500000, tzinfo=dt.UTC)),
    ("2026-11-30 00:41:07", None), ("2026-11-30T00:41:07.48+08:00", None), ("2026-02-30T00:41:07Z", None), ("", None),
])
def test_system_time(text: str, expected: dt.datetime | None) -> None:
    assert evt.system_time(text) == expected


def test_a_kernel_boot_event_as_evtrender_writes_it() -> None:
    event = evt.parse_event(kernel_boot_event(at(hours=1), "1", 42_013))
    assert event is not None
    assert (event.provider, event.event_id, event.record_id) == ("Microsoft-Windows-Kernel-Boot", 27, 42_013)
    assert event.time_created == at(hours=1)
    assert event.data == {"BootType": "1", "LoadOptions": "NOEXECUTE=OPTIN"}
    assert evt.data_int(event, "BootType") == 1 and evt.data_int(event, "LoadOptions") is None


def test_double_quotes_a_hex_number_and_a_classic_event_parse_too() -> None:
    double = ('<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
              '<Provider Name="Microsoft-Windows-Kernel-Boot"/><EventID>27</EventID>'
              '<TimeCreated SystemTime="2026-11-30T00:41:07.1Z"/></System>'
              '<EventData><Data Name="BootType">0x1</Data></EventData></Event>')
    event = evt.parse_event(double)
    assert event is not None and evt.data_int(event, "BootType") == 1 and event.record_id == 0
    classic = evt.parse_event(service_stop_event(at(hours=15), 41_950))  # EventID with Qualifiers, no named data
    assert classic is not None and (classic.provider, classic.event_id, classic.data) == ("EventLog", 6006, {})


@pytest.mark.parametrize("xml", [
    "", "<Event", "<Event><System/></Event>",  # not XML; no namespace
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><EventID>27</EventID>"
    "</System></Event>",  # no time
    "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System><EventID>x</EventID>"
    "<TimeCreated SystemTime='2026-11-30T00:41:07Z'/></System></Event>",  # no number
])
def test_what_is_not_an_event_with_a_time_gives_none(xml: str) -> None:
    assert evt.parse_event(xml) is None


# ------------------------------------------------------------------------------------ the boot time


def test_the_newest_start_from_off_is_the_last_start() -> None:
    newest_first = [kernel_boot_event(at(minutes=5), "2", 9),  # resumed from hibernation: not a start
                    service_stop_event(at(hours=1), 8),
                    kernel_boot_event(at(hours=2), "0x1", 7),  # a Fast Startup power-on
                    kernel_boot_event(at(days=3), "0", 6)]
    assert win.last_start(newest_first) == at(hours=2)
    assert win.last_start(newest_first[:2]) is None
    assert win.last_start(["<Event", kernel_boot_event(at(days=3), "0", 6)]) == at(days=3)


@pytest.mark.parametrize(("started", "chosen"), [
    (None, "kernel"),
    (at(hours=2) + dt.timedelta(seconds=6), "event"),  # a full boot: logged seconds after the kernel started
    (at(minutes=30), "event"),  # a Fast Startup after the kernel's boot
    (at(hours=2, minutes=50), "event"),  # a clock 50 minutes slow at boot, set right since: within the slack
    (at(hours=3, minutes=1), "kernel"),  # an earlier boot's event: this boot's is missing
])
def test_the_boot_time_chosen(started: dt.datetime | None, chosen: str) -> None:
    kernel = at(hours=2)
    assert win.choose_boot_time(kernel, started) == (started if chosen == "event" else kernel)


def test_a_full_boot_is_its_kernel_boot_event(windows: FakeWindows, clock: Clock) -> None:
    windows.ticks_ms = 2 * HOUR
    windows.events = [kernel_boot_event(at(days=1), "0", 1), kernel_boot_event(at(hours=2) + dt.timedelta(seconds=5),
                                                                              "0", 2)]
    assert boot_clock(windows, clock)() == at(hours=2) + dt.timedelta(seconds=5)
    assert windows.queries == [("System", win.BOOT_QUERY, evt.EVT_QUERY_CHANNEL_PATH | evt.EVT_QUERY_REVERSE_DIRECTION)]
    assert win.BOOT_QUERY == "*[System[Provider[@Name='Microsoft-Windows-Kernel-Boot'] and EventID=27]]"


def test_after_fast_startup_the_power_on_is_the_boot_not_the_kernels(windows: FakeWindows, clock: Clock) -> None:
    windows.ticks_ms, windows.asleep_ms = 96 * HOUR, 70 * HOUR  # the kernel booted four days ago
    windows.events = [kernel_boot_event(at(hours=96), "0", 1), kernel_boot_event(at(hours=48), "1", 2),
                      kernel_boot_event(at(minutes=40), "1", 3)]
    assert boot_clock(windows, clock)() == at(minutes=40)


def test_an_agent_that_wakes_from_a_fast_startup_sees_the_new_boot(windows: FakeWindows, clock: Clock) -> None:
    """With Fast Startup the service's process is hibernated with the kernel and carries on after power-on."""
    windows.ticks_ms = 9 * HOUR
    windows.events = [kernel_boot_event(at(hours=9), "0", 1)]
    booted = boot_clock(windows, clock)
    assert booted() == at(hours=9)
    clock.now += dt.timedelta(hours=16)  # off at 18:30, on again at 08:30
    windows.ticks_ms += 16 * HOUR
    windows.asleep_ms += 15 * HOUR + 59 * 60_000
    windows.events.append(kernel_boot_event(clock.now - dt.timedelta(seconds=50), "1", 2))
    assert booted() == clock.now - dt.timedelta(seconds=50)


def test_the_log_is_read_again_only_after_sleep_or_a_clock_change(windows: FakeWindows, clock: Clock) -> None:
    windows.ticks_ms = 3 * HOUR
    windows.events = [kernel_boot_event(at(hours=3), "0", 1)]
    booted = boot_clock(windows, clock)
    for _ in range(5):  # heartbeats: time passes, the tick count with it
        assert booted() == at(hours=3)
        clock.now += dt.timedelta(minutes=1)
        windows.ticks_ms += 60_000
    assert len(windows.queries) == 1
    windows.ticks_ms += 30 * 60_000  # half an hour asleep
    windows.asleep_ms += 30 * 60_000
    clock.now += dt.timedelta(minutes=30)
    booted()
    assert len(windows.queries) == 2
    clock.now += dt.timedelta(minutes=5)  # the clock set forward: the kernel's boot moves
    booted()
    assert len(windows.queries) == 3


def test_without_an_event_the_kernels_boot_stands(windows: FakeWindows, clock: Clock) -> None:
    windows.ticks_ms = 2 * HOUR + 1234
    windows.events = [service_stop_event(at(hours=3), 1)]  # the log was cleared since: no boot event
    assert boot_clock(windows, clock)() == at(hours=2, milliseconds=1234)


def test_without_the_unbiased_time_the_event_is_read_once(windows: FakeWindows, clock: Clock) -> None:
    windows.ticks_ms = 2 * HOUR
    windows.failures["QueryUnbiasedInterruptTime"] = 1
    windows.events = [kernel_boot_event(at(hours=2), "0", 1)]
    booted = boot_clock(windows, clock)
    assert [booted(), booted()] == [at(hours=2)] * 2 and len(windows.queries) == 1


def test_an_unreadable_log_is_logged_once_and_tried_again(windows: FakeWindows, clock: Clock,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    windows.ticks_ms = 2 * HOUR
    windows.events = [kernel_boot_event(at(hours=2) + dt.timedelta(seconds=3), "0", 1)]
    windows.failures["EvtQuery"] = RPC_S_SERVER_UNAVAILABLE  # the EventLog service not running
    booted = boot_clock(windows, clock)
    with caplog.at_level(logging.INFO, logger="agent.collectors"):
        assert [booted(), booted()] == [at(hours=2)] * 2
        del windows.failures["EvtQuery"]
        assert booted() == at(hours=2) + dt.timedelta(seconds=3)
    assert [r.getMessage() for r in caplog.records] == [
        "boot time: nothing to report: EvtQuery on the System log failed (error 1722); the kernel's boot stands"]
    assert len(windows.queries) == 3


def test_off_windows_there_is_no_boot_time(caplog: pytest.LogCaptureFixture) -> None:
    booted = win.BootClock()  # loads the real DLLs, which this platform does not have
    with caplog.at_level(logging.INFO, logger="agent.collectors"):
        assert [booted(), booted()] == [None, None]
    assert len(caplog.records) == 1 and "not available on this platform" in caplog.records[0].getMessage()


# ------------------------------------------------------------------------------------ reading the log


def test_query_xml_gives_the_selected_events_newest_first_and_closes_every_handle(windows: FakeWindows) -> None:
    windows.events = [kernel_boot_event(at(hours=h), "0", 10 - h) for h in (9, 5, 1)]
    windows.events.insert(1, service_stop_event(at(hours=6), 99))
    found = evt.query_xml(windows, "System", win.BOOT_QUERY, 2)
    assert [evt.parse_event(xml).record_id for xml in found] == [9, 5]  # type: ignore[union-attr]
    assert windows.open_handles == set()


def test_an_event_longer_than_the_first_buffer_is_rendered_in_full(windows: FakeWindows) -> None:
    long = kernel_boot_event(at(hours=1), "0", 7).replace(" NOEXECUTE=OPTIN", " NOEXECUTE=OPTIN" + " X" * 5000)
    windows.events = [long]
    assert evt.query_xml(windows, "System", win.BOOT_QUERY, 4) == [long]
    assert windows.calls.count("EvtRender") == 2 and windows.open_handles == set()


def test_no_matching_event_is_an_empty_answer(windows: FakeWindows) -> None:
    windows.events = [service_stop_event(at(hours=1), 1)]
    assert evt.query_xml(windows, "System", win.BOOT_QUERY, 4) == []
    assert windows.open_handles == set()


@pytest.mark.parametrize(("function", "message"), [
    ("EvtQuery", r"EvtQuery on the System log failed \(error 5\)"),
    ("EvtNext", r"EvtNext on the System log failed \(error 5\)"),
])
def test_a_failing_call_raises_and_leaves_no_handle_open(windows: FakeWindows, function: str, message: str) -> None:
    windows.events = [kernel_boot_event(at(hours=1), "0", 7)]
    windows.failures[function] = 5  # ERROR_ACCESS_DENIED
    with pytest.raises(evt.EventLogError, match=message):
        evt.query_xml(windows, "System", win.BOOT_QUERY, 4)
    assert windows.open_handles == set()


def test_a_render_failure_raises_and_closes_the_events(windows: FakeWindows) -> None:
    windows.events = [kernel_boot_event(at(hours=1), "0", 7)]
    windows.failures["EvtRender"] = 5
    with pytest.raises(evt.EventLogError, match=r"EvtRender failed \(error 5\)"):
        evt.query_xml(windows, "System", win.BOOT_QUERY, 4)
    assert windows.open_handles == set()

"""Which devices of an inventory are equipment, and the keys that recognise them."""

from __future__ import annotations

from controller.assets.discovery import asset_keys, discover, inventory_keys, usb_kind
from controller.assets.reconcile import Registered, Seen, Workstation, match
from protos.counterguard.v1 import facts_pb2 as pb
from tests.controller.assets.centre import (
    CARD_READER,
    EVALUATOR,
    HUB,
    KEYBOARD,
    MOUSE,
    PRINT_QUEUE,
    SCANNER,
    SIGNATURE_PAD,
    STICK,
    USB_PRINTER,
    pc,
    usb,
)


def test_usb_equipment_by_class_and_by_name() -> None:
    assert [usb_kind(d) for d in (USB_PRINTER, SCANNER, CARD_READER, SIGNATURE_PAD, EVALUATOR)] == [
        "printer", "scanner", "card_reader", "signature_pad", "evaluator"]
    assert [usb_kind(d) for d in (KEYBOARD, MOUSE, HUB, STICK)] == [None, None, None, None]
    id_reader = usb("0400", "c35a", "", pb.DEVICE_CLASS_VENDOR_SPECIFIC, vendor="Synjones", product="身份证阅读器")
    assert usb_kind(id_reader) == "card_reader"
    # A keyboard with a smart-card slot is a card reader; a webcam named "signature" is still a camera.
    assert usb_kind(usb("04d9", "1400", "", pb.DEVICE_CLASS_UNSPECIFIED, pb.DEVICE_CLASS_HID,
                        pb.DEVICE_CLASS_SMART_CARD, product="Keyboard")) == "card_reader"
    assert usb_kind(usb("046d", "0825", "", pb.DEVICE_CLASS_VIDEO, product="Signature cam")) is None


def test_a_usb_printer_and_its_queue_are_one_item() -> None:
    items = discover("ag-1", pc(devices=[USB_PRINTER, KEYBOARD, HUB], printers=[PRINT_QUEUE]))

    assert [(i.kind, i.equipment) for i in items] == [("pc", True), ("printer", True), ("other", False)]
    printer = items[1]
    assert ("usb", "03f0", "042a", "VNC3B12345") in printer.keys
    assert ("printer-name", "HP_LaserJet_M1136") in printer.keys
    assert printer.identity == "--printer HP_LaserJet_M1136"


def test_without_serials_one_usb_printer_and_one_usb_queue_are_paired() -> None:
    bare = usb("04f9", "0042", "", pb.DEVICE_CLASS_PRINTER, vendor="Brother", product="HL-1110")
    windows_queue = pb.Printer(name="Brother HL-1110 series", uri="USB001", make_model="Brother HL-1110 series")
    pdf = pb.Printer(name="Microsoft Print to PDF", uri="PORTPROMPT:", make_model="Microsoft Print To PDF")

    items = discover("ag-1", pc(devices=[bare], printers=[windows_queue, pdf]))

    assert [(i.kind, i.equipment, i.description.split(" (")[0]) for i in items[1:]] == [
        ("printer", True, "Brother HL-1110 series"), ("printer", False, "Microsoft Print to PDF")]
    # USB001 is on every Windows PC: a weak key, unlike a network printer's address.
    assert ("printer-uri", "USB001") not in items[1].keys
    network = discover("ag-1", pc(printers=[pb.Printer(name="大厅共享", uri="ipp://10.0.0.9/ipp/print")]))[1]
    assert ("printer-uri", "ipp://10.0.0.9/ipp/print") in network.keys


def test_the_pc_is_known_by_agent_and_real_serial_only() -> None:
    assert discover("ag-1", pc(serial="PC9"))[0].keys == (("agent", "ag-1"), ("system-serial", "PC9"))
    assert discover("ag-1", pc(serial="To be filled by O.E.M."))[0].keys == (("agent", "ag-1"),)


def _seen(agent: str, window: str, *devices: pb.UsbDevice) -> list[Seen]:
    workstation = Workstation(agent, window, None, agent, None, pc())  # type: ignore[arg-type]
    return [Seen(item, workstation) for item in discover(agent, pc(devices=devices))]


def _asset(tag: str, window: str, vendor_id: str, product_id: str, serial: str = "") -> Registered:
    keys = asset_keys("card_reader", None, vendor_id, product_id, serial, "", "")
    return Registered(tag, "card_reader", window, None, "", "", None, keys)


def test_a_serial_matches_anywhere_a_model_only_at_its_window_and_each_device_once() -> None:
    plain = usb("0bda", "0169", "", pb.DEVICE_CLASS_SMART_CARD)
    seen = _seen("ag-1", "W01", CARD_READER, plain, plain) + _seen("ag-2", "W02", plain)
    assets = [_asset("R-SERIAL", "W02", "076b", "3021", "CR-7781"), _asset("R-A", "W01", "0bda", "0169"),
              _asset("R-B", "W01", "0bda", "0169"), _asset("R-C", "W01", "0bda", "0169"),
              _asset("R-OTHER-SERIAL", "W01", "0bda", "0169", "XYZ")]

    matched = match(assets, seen)

    assert {tag: (s.workstation.agent_id, s.item.keys[0]) for tag, s in matched.items()} == {
        "R-SERIAL": ("ag-1", ("usb", "076b", "3021", "CR-7781")),
        "R-A": ("ag-1", ("usb-model", "0bda", "0169")),
        "R-B": ("ag-1", ("usb-model", "0bda", "0169")),
    }  # R-C: the third reader of the model is at W02; R-OTHER-SERIAL: no device has that serial


def test_inventory_keys_are_the_keys_of_what_discover_finds() -> None:
    inventory = pc(devices=[USB_PRINTER, CARD_READER, KEYBOARD, HUB, SIGNATURE_PAD],
                   printers=[PRINT_QUEUE, pb.Printer(name="大厅共享", uri="ipp://10.0.0.9/ipp/print")])

    assert inventory_keys("ag-1", inventory) == {k for item in discover("ag-1", inventory) for k in item.keys}

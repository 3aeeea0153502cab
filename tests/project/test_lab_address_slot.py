"""Labs running at once never share loopback addresses, whatever their API ports."""

from __future__ import annotations

import socket

import pytest

from lab import address_slot
from lab.cluster import Lab
from testkit.gateway_rig import SERVER_PORTS, free_port


def congruent_ports():
    """Two free API ports with the same remainder modulo the slot count (before slots were
    claimed, such labs shared their addresses)."""
    first = free_port()
    for candidate in range(first % address_slot.SLOTS + SERVER_PORTS[0], SERVER_PORTS[1], address_slot.SLOTS):
        if candidate == first:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return first, candidate
    raise AssertionError("no second free port found")


def test_two_labs_whose_ports_share_a_remainder_get_their_own_addresses(tmp_path):
    first_port, second_port = congruent_ports()
    first = Lab(str(tmp_path / "a"), port=first_port, persist=False).start()
    try:
        second = Lab(str(tmp_path / "b"), port=second_port, persist=False).start()
        try:
            assert first.slot != second.slot
            assert first.network.pod_net != second.network.pod_net
            assert first.network.service_net != second.network.service_net
            assert first.external.net != second.external.net
        finally:
            second.stop()
    finally:
        first.stop()


def test_a_restarted_lab_keeps_its_slot_and_a_second_lab_cannot_take_it(tmp_path):
    lab = Lab(str(tmp_path / "a"), port=free_port(), persist=True).start()
    slot = lab.slot
    with pytest.raises(address_slot.SlotTaken, match="another running lab holds"):
        address_slot.claim(lab.state_dir, 0)
    lab.stop()
    again = Lab(str(tmp_path / "a"), port=free_port(), persist=True).start()
    try:
        assert again.slot == slot, "its Services' stored cluster IPs stay valid"
    finally:
        again.stop()

"""Which loopback addresses a lab owns, so that labs running at once never share one.

A lab's slot n gives it pods in 127.(100+n).0.0/16, Services in
127.(150+n).0.0/16 and the outside services in 127.(200+n).0.0/16. The slot is
held by a socket bound to 127.(100+n).255.254 (an address no pod gets) for the
lab's lifetime: the kernel lets only one lab bind it and frees it when that lab
exits, however it exits. The slot is kept in the state directory, because the
Services' cluster IPs are stored with the API objects: a restarted lab needs
its old slot back.
"""

from __future__ import annotations

import errno
import os
import socket

SLOTS = 50
CLAIM_PORT = 61999  # above Linux's ephemeral range (32768-60999), so no client socket holds it


class SlotTaken(RuntimeError):
    pass


def _bind(slot):
    claim = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        claim.bind(("127.%d.255.254" % (100 + slot), CLAIM_PORT))
    except OSError as err:
        claim.close()
        if err.errno == errno.EADDRINUSE:
            return None
        raise
    return claim


def read(state_dir):
    """The slot kept in ``state_dir``, or None."""
    try:
        with open(os.path.join(state_dir, "address-slot")) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def unheld(state_dir):
    """The slot kept in ``state_dir`` when no running lab holds it (what a stopped lab left), else None."""
    slot = read(state_dir)
    held = _bind(slot) if slot is not None else None
    if held is None:
        return None
    held.close()
    return slot


def claim(state_dir, preferred):
    """(slot, the socket holding it). A lab with state keeps its slot; a new one takes
    ``preferred`` (its API port modulo SLOTS) when free, else the next free slot."""
    path = os.path.join(state_dir, "address-slot")
    kept = read(state_dir)
    if kept is not None:
        held = _bind(kept)
        if held is None:
            raise SlotTaken("the lab in %s uses addresses 127.%d-%d.x, which another running lab holds; "
                            "stop that lab first" % (state_dir, 100 + kept, 200 + kept))
        return kept, held
    for offset in range(SLOTS):
        slot = (preferred + offset) % SLOTS
        held = _bind(slot)
        if held is not None:
            with open(path, "w") as handle:
                handle.write("%d\n" % slot)
            return slot, held
    raise SlotTaken("all %d lab address slots are held by running labs; stop one" % SLOTS)

"""A module runs in a process of its own, never in the controller's: its warnings go into its result."""

from __future__ import annotations

import pytest

from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def module_process(monkeypatch):
    # Once anything has imported the controller (a filter test in the same pytest run), ansible-core
    # sends a module's warnings to the controller's display instead of into the module's result.
    monkeypatch.setattr(_internal, "is_controller", False)

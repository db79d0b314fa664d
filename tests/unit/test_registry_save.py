"""`Registry.save` mirrors `Application.save` of the eventsourcing version it was written for."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from eventsourcing.application import Application

from services.registry.application import Registry


def test_the_save_override_is_of_the_installed_library_version() -> None:
    # Registry.save repeats Application.save (9.5.6) without its runtime-protocol checks: on
    # another version of the library, compare the two again before changing this.
    assert version("eventsourcing") == "9.5.6"
    steps = ("_record(processing_event)", "_take_snapshots(processing_event)",
             "_notify(recordings)", "notify(processing_event.events)")  # fmt: skip
    library, ours = inspect.getsource(Application.save), inspect.getsource(Registry.save)
    assert all(step in library and step in ours for step in steps)

"""What `make sanitize` leaves out of its pytest run, and why.

The sanitizer run (SYNFIN_SANITIZED=1, the engine built with ASan+UBSan) is
there to run the engine's C code on damaged, hostile and crafted inputs. A test
that reaches no C code, or only C code that other tests of that run reach on
the same inputs, costs minutes of `make test` under ASan and can catch nothing
there that the plain suite does not. Two kinds are deselected when
SYNFIN_SANITIZED is set (the plain `pytest` run keeps every one of them):

* a test parametrized onto the reference engine (a parameter whose id is
  `reference`): the reference pipeline is Python, not one line of it is C;
* a test marked `plain_only`, whose mark says which other test covers its C.
"""

from __future__ import annotations

import os

import pytest

#: the mark of a test (or one parameter of it) whose engine C the sanitizer run reaches elsewhere
plain_only = pytest.mark.plain_only


def on_reference_engine(item: pytest.Item) -> bool:
    """Whether one of the item's parameters is the reference engine (by its id: `reference-pcap`, `reference`)."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "reference" in callspec.id.split("-")


def left_out_under_the_sanitizer(item: pytest.Item) -> bool:
    return item.get_closest_marker("plain_only") is not None or on_reference_engine(item)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("SYNFIN_SANITIZED"):
        return
    kept = [item for item in items if not left_out_under_the_sanitizer(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if left_out_under_the_sanitizer(item)])
        items[:] = kept

"""pytest plugin: the `lab` marker (skips without root)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: builds real namespaces; needs root")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (CAP_NET_ADMIN) to build namespaces")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)

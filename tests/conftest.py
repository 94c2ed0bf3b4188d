"""Marks every test by the folder it lives in, so `-m lab` and `-m cluster` select them."""

import pytest

MARKS = {"tests/lab/": pytest.mark.lab, "tests/cluster/": pytest.mark.cluster}


def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.fspath)
        for folder, mark in MARKS.items():
            if folder in path:
                item.add_marker(mark)

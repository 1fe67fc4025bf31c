"""The public API is importable from the top-level package and names the stable public API."""

import subprocess
import sys

import pytest

import ntkdr


@pytest.mark.parametrize("name", ntkdr.__all__)
def test_every_export_resolves(name):
    assert getattr(ntkdr, name) is not None


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ntkdr.nope  # noqa: B018


def test_import_is_lazy():
    code = "import sys, ntkdr; print('matplotlib' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]

"""The real-data fixture: skipped locally when the data is missing, failed in
CI (`CI=true`), so that a CI run without `../shared/data` cannot pass by
skipping every real-data test."""

import importlib.util
import pathlib

import pytest

ROOT_CONFTEST = pathlib.Path(__file__).resolve().parents[1] / "conftest.py"


def _require_data():
    spec = importlib.util.spec_from_file_location("root_conftest", ROOT_CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require_data


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_missing_data_skips_outside_ci(tmp_path, monkeypatch, ci):
    """Oracle: the rule itself, stated by hand: only CI=true fails."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(BaseException) as outcome:  # a Failed must not escape
        _require_data()(tmp_path)
    assert outcome.type is pytest.skip.Exception
    assert "real data not found" in str(outcome.value)


def test_missing_data_fails_in_ci(tmp_path, monkeypatch):
    """Oracle: the rule stated by hand: with CI=true a missing folder is a
    failure (pytest's `Failed`), not a skip."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as outcome:  # a Skipped must not escape
        _require_data()(tmp_path)
    assert outcome.type is pytest.fail.Exception
    assert "CI=true" in str(outcome.value)


def test_present_data_is_returned_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "mnist.npz").write_bytes(b"")
    assert _require_data()(tmp_path) == tmp_path

"""finetune.data.loaders: the load-skips log that worker processes share."""

import os

import pytest

from finetune.data.loaders import LoadSkips


def test_the_skips_log_exists_only_once_something_failed():
    """Regression: the log was created with every dataset, so a process killed mid-run (which
    never runs the finalizer) left an empty file in the temp folder each time."""
    skips = LoadSkips()
    assert not os.path.exists(skips.path)
    assert skips.new() == []  # no log yet: nothing failed
    with pytest.warns(UserWarning, match="skipping unreadable image a.png: truncated"):
        skips.record(3, "a.png", "truncated")
    assert os.path.exists(skips.path) and oct(os.stat(skips.path).st_mode & 0o777) == "0o600"
    skips.record(3, "a.png", "truncated")  # the same index again: warned and logged once
    assert skips.new() == [("a.png", "truncated")] and skips.bad == {3}
    path = skips.path
    del skips  # the owner goes: so does its log
    assert not os.path.exists(path)


def test_a_planted_symlink_is_not_followed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    skips = LoadSkips()
    target = tmp_path / "target"
    target.write_text("")
    os.symlink(target, skips.path)
    with pytest.warns(UserWarning):
        skips.record(0, "b.png", "bad")
    assert target.read_text() == ""  # nothing written through the link

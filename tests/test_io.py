"""finetune._io: a full disk is one clear error, strict JSON lines, readable files."""

import errno
import json
import shutil
import stat
from collections import namedtuple

import pytest
import torch

from finetune import _io
from finetune._io import atomic_path, json_line


@pytest.mark.parametrize(
    "error, free",
    [  # regression: these reached the user as tracebacks (the atomic write itself held)
        (RuntimeError("[enforce fail at inline_container.cc] . basic_ios::clear"), 0),
        (OSError(errno.ENOSPC, "No space left on device"), 10**9),
        (
            Exception(
                "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                'message: "No space left on device" }) os error 28'
            ),
            10**9,
        ),
    ],
)
def test_a_full_disk_is_one_oserror_naming_the_file(tmp_path, monkeypatch, error, free):
    target = tmp_path / "trainer_state.pt"
    target.write_bytes(b"previous")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - free, free))
    with pytest.raises(OSError, match="no space left on the disk .* trainer_state.pt") as info:
        with atomic_path(target) as tmp:
            torch.save({"x": torch.zeros(1)}, tmp)
            raise error
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


def test_other_errors_pass_through_untouched(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x"):
            raise KeyError("not about disks")


def test_safetensors_files_are_as_readable_as_the_rest(tmp_path):
    # regression: weight files were written 0600 while every other run file was 0644
    from safetensors.torch import save_model

    with atomic_path(tmp_path / "model.safetensors") as tmp:
        save_model(torch.nn.Linear(2, 2), tmp)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) & 0o044


def test_json_lines_are_strict_json():
    # regression: a diverged run wrote NaN/Infinity into metrics.jsonl, which is not JSON
    line = json_line({"val_loss": float("nan"), "lr": float("inf"), "epoch": 1})
    assert json.loads(line) == {"val_loss": None, "lr": None, "epoch": 1}
    assert "NaN" not in line and "Infinity" not in line


def test_read_run_config_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        _io.read_run_config(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        _io.read_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        _io.read_run_config(tmp_path)

"""The data fingerprint a resumed run is checked against."""

import hashlib
import json

from finetune.data.fingerprint import _relative, fingerprint
from finetune.data.folder import SPLITS, DataInfo, scan_folder


def _old_digest(data: DataInfo) -> str:
    # the formula runs recorded before issue 12 (the whole list, sorted, as one JSON text)
    rows = []
    for split in SPLITS:
        for item, label in getattr(data, split):
            name = item if isinstance(item, int) else _relative(item, data.root)
            check = data.checks.get(item) if not isinstance(item, int) else None
            digest = getattr(check, "digest", None)
            rows.append([split, name, list(label) if isinstance(label, tuple) else label, digest])
    return hashlib.sha256(json.dumps(sorted(rows, key=str)).encode()).hexdigest()


def test_the_digest_is_the_one_earlier_runs_recorded(image_folder):
    """Regression (issue 12): the fingerprint held every row, every row's sort key and the whole
    JSON text at once (~0.5 kB per image at the start of a run); it now hashes row by row, and
    must give the same digest, or every run recorded before could no longer be resumed."""
    data = scan_folder(image_folder, val_split=0.25)
    assert data.val and fingerprint(data)["sha256"] == _old_digest(data)
    indexed = DataInfo(root="<x>", layout="dataset", classes=("a", "b"),
                       train=((3, 1), (0, 0), (2, 1)), val=((1, 0),), test=((4, (0, 1)),))  # fmt: skip
    assert fingerprint(indexed)["sha256"] == _old_digest(indexed)
    empty = DataInfo(root="<x>", layout="dataset", classes=("a",), train=(), val=())
    assert fingerprint(empty)["sha256"] == _old_digest(empty)

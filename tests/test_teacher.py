"""train.teacher: a finished run's probabilities mixed into the training targets."""

import json

import pytest
import torch
from conftest import COLOURS, make_image, tiny_run
from PIL import Image

import finetune
from finetune.errors import ConfigError
from finetune.events import listening
from finetune.inference import image_logits, load_for_inference
from finetune.teacher import adjust_to_labels, check_teacher, teacher_targets


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """(data folder, finished run of test_resnet on it)."""
    from conftest import make_folder

    root = tmp_path_factory.mktemp("teach")
    data = make_folder(root / "data")
    return data, tiny_run(data, output=str(root / "teacher")).run_dir


@pytest.mark.parametrize(
    "classes, multilabel, message",
    [
        (("cat", "dog"), False, None),
        (("dog", "cat"), False, "trained on the classes ['cat', 'dog'], this data has ['dog'"),
        (("cat", "dog", "eel"), False, "a teacher needs the same classes in the same order"),
        (("cat", "dog"), True, "this data is multi-label and the teacher is not"),
    ],
)
def test_check_teacher_wants_the_same_classes(teacher, classes, multilabel, message):
    _, run_dir = teacher
    if message is None:
        check_teacher(run_dir, classes=classes, multilabel=multilabel)
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        check_teacher(run_dir, classes=classes, multilabel=multilabel)


def test_check_teacher_names_a_folder_with_no_run(tmp_path):
    with pytest.raises(ConfigError, match=rf"train.teacher {tmp_path}: no finished run there"):
        check_teacher(tmp_path, classes=("a", "b"), multilabel=False)


def test_a_teacher_without_weights_fails_before_the_students_run_directory(teacher, tmp_path):
    """Regression: the weights were looked for after the student's run directory was made,
    which the error left behind empty."""
    import shutil

    data, run_dir = teacher
    broken = tmp_path / "no-weights"
    shutil.copytree(run_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no model.safetensors .*give a finished run"):
        tiny_run(data, output=str(tmp_path / "student"), teacher=str(broken))
    assert not (tmp_path / "student").exists()


def test_teacher_targets_mix_its_probabilities_with_the_smoothed_labels(teacher, tmp_path):
    data, run_dir = teacher
    files = sorted(str(p) for p in data.rglob("*.png"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    labels = [0, 1, 0, 1]
    seen = []
    with pytest.warns(UserWarning, match="skipping unreadable image"), listening(seen.append):
        targets = teacher_targets(run_dir, [*files, str(broken)], labels, classes=("cat", "dog"),
                                  weight=0.75, smoothing=0.1)  # fmt: skip
    _, logits = image_logits(load_for_inference(run_dir), files)
    wrong = int((logits.argmax(1) != torch.tensor(labels[:3])).sum())
    said = [e.message for e in seen if "top class is not the label" in e.message]
    assert said == ([f"teacher {run_dir}: its top class is not the label on {wrong} of 4 "
                     "training images; there the two probabilities swap (knowledge "
                     "adjustment)"] if wrong else [])  # fmt: skip
    smoothed = torch.tensor([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.05, 0.95]])
    adjusted = adjust_to_labels(logits.softmax(-1), torch.tensor(labels[:3]))
    expected = 0.75 * adjusted + 0.25 * smoothed[:3]
    assert torch.allclose(targets[:3], expected, atol=1e-6)
    assert torch.allclose(targets[3], smoothed[3])  # unreadable: the label alone
    assert torch.allclose(targets.sum(1), torch.ones(4))


# (teacher probabilities, labels) -> adjusted: the label's class is always the top one
ADJUST = [
    ([[0.7, 0.2, 0.1]], [1], [[0.2, 0.7, 0.1]]),  # wrong: top and label swap
    ([[0.1, 0.8, 0.1]], [1], [[0.1, 0.8, 0.1]]),  # right: unchanged
    ([[0.3, 0.3, 0.4]], [0], [[0.4, 0.3, 0.3]]),
    ([[0.9, 0.1], [0.4, 0.6]], [1, 1], [[0.1, 0.9], [0.4, 0.6]]),  # rows independent
]


@pytest.mark.parametrize("probs, labels, expected", ADJUST)
def test_adjust_to_labels_swaps_a_wrong_top_class_with_the_label(probs, labels, expected):
    adjusted = adjust_to_labels(torch.tensor(probs), torch.tensor(labels))
    assert torch.allclose(adjusted, torch.tensor(expected))


def _score_shard(rank, world, init, run_dir, files, labels, out):
    """One torchrun-like process: join a gloo group, score its share, save targets and reads."""
    import torch.distributed as td

    from finetune.train.distributed import DistInfo

    td.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    read = []
    images = [lambda f=f: (read.append(f), Image.open(f))[1] for f in files]
    targets = teacher_targets(run_dir, images, labels, classes=("cat", "dog"), weight=0.5,
                              smoothing=0.1, dist=DistInfo(world, rank, rank))  # fmt: skip
    torch.save((targets, read), f"{out}-{rank}.pt")
    # both ranks done before either tears down. Regression (CI of 2026-12-01): rank 1 destroyed
    # its gloo group while rank 0 still held the pair, and aborted: "terminate called without
    # an active exception" (SIGABRT)
    td.barrier()
    td.destroy_process_group()


def test_torchrun_processes_share_the_teacher_pass(teacher, tmp_path):
    # regression: every process scored every training image (world times the work)
    data, run_dir = teacher
    files = sorted(str(p) for p in data.rglob("*.png"))
    labels = [int("dog" in f) for f in files]
    alone = teacher_targets(run_dir, files, labels, classes=("cat", "dog"), weight=0.5,
                            smoothing=0.1)  # fmt: skip
    out = tmp_path / "targets"
    args = (2, f"file://{tmp_path / 'init'}", str(run_dir), files, labels, str(out))
    torch.multiprocessing.spawn(_score_shard, args=args, nprocs=2)
    reads = []
    for rank in (0, 1):
        targets, read = torch.load(f"{out}-{rank}.pt")
        assert torch.allclose(targets, alone, atol=1e-5)  # every process gets all the targets
        reads.append(sorted(read))
    assert reads == [files[0::2], files[1::2]]


def test_a_run_with_a_teacher_trains_on_its_targets_and_records_it(teacher, tmp_path):
    data, run_dir = teacher
    seen = []
    with listening(seen.append):
        result = tiny_run(data, output=str(tmp_path / "student"), teacher=str(run_dir),
                          distill=0.7, epochs=2)  # fmt: skip
    saved = json.loads((result.run_dir / "config.json").read_text())["finetune"]["config"]
    assert saved["train"]["teacher"] == str(run_dir) and saved["train"]["distill"] == 0.7
    epochs = result.metrics["epochs"]
    assert len(epochs) == 2 and all(0 <= e["train_accuracy"] <= 1 for e in epochs)
    said = [e.message for e in seen if "probabilities on" in e.message]
    assert said and "probabilities on 10 training images" in said[0] and "weight 0.7" in said[0]


def test_a_resumed_run_reads_the_targets_it_started_with(teacher, tmp_path):
    """Regression: --resume scored the teacher again, so a teacher retrained (or deleted) in
    between silently changed a run's targets half-way through."""
    import shutil

    from safetensors.torch import load_file

    data, run_dir = teacher
    mine = tmp_path / "teacher"
    shutil.copytree(run_dir, mine)
    first = tiny_run(data, output=str(tmp_path / "student"), teacher=str(mine))
    kept = load_file(str(first.run_dir / "teacher_targets.safetensors"))["targets"]
    assert kept.shape == (10, 2)  # the 10 training images of 12, two classes
    assert torch.allclose(kept.sum(1), torch.ones(10))
    shutil.rmtree(mine)  # the teacher is gone: a resume must not need it
    seen = []
    with listening(seen.append):
        resumed = finetune.adapt(resume=first.run_dir, epochs=2, verbose=False)
    assert [e["epoch"] for e in resumed.metrics["epochs"]] == [1, 2]
    said = [e.message for e in seen if "probabilities on" in e.message]
    assert said and "read back from" in said[0]
    again = load_file(str(first.run_dir / "teacher_targets.safetensors"))["targets"]
    assert torch.equal(again, kept)


@pytest.mark.parametrize(
    "tensors, message",
    [
        (
            {"targets": torch.ones(3, 2)},
            r"shape \(3, 2\) where 10 training images and 2 classes need \(10, 2\)",
        ),
        ({"other": torch.ones(10, 2)}, "no 'targets' tensor"),
        ({"targets": torch.full((10, 2), float("nan"))}, "values that are not probabilities"),
        ({"targets": torch.full((10, 2), 2.0)}, "values that are not probabilities"),
        ({"targets": torch.ones(10, 2, dtype=torch.int64)}, "values that are not probabilities"),
        (None, r"unreadable \("),
    ],
)
def test_resume_refuses_kept_targets_that_do_not_fit(teacher, tmp_path, tensors, message):
    from safetensors.torch import save_file

    data, run_dir = teacher
    first = tiny_run(data, output=str(tmp_path / "student"), teacher=str(run_dir))
    kept = first.run_dir / "teacher_targets.safetensors"
    if tensors is None:
        kept.write_bytes(b"not a safetensors file")
    else:
        save_file(tensors, str(kept))
    with pytest.raises(ConfigError, match=message) as caught:
        finetune.adapt(resume=first.run_dir, epochs=2, verbose=False)
    assert "delete the file to score the teacher again" in str(caught.value)


def test_no_keep_state_drops_the_kept_targets(teacher, tmp_path):
    data, run_dir = teacher
    result = tiny_run(data, output=str(tmp_path / "student"), teacher=str(run_dir),
                      keep_state=False)  # fmt: skip
    assert not (result.run_dir / "teacher_targets.safetensors").exists()


def test_a_relative_teacher_is_recorded_absolute(teacher, tmp_path, monkeypatch):
    """--resume from another directory must still find the teacher."""
    data, run_dir = teacher
    monkeypatch.chdir(run_dir.parent)
    result = tiny_run(data, output=str(tmp_path / "student"), teacher=run_dir.name)
    saved = json.loads((result.run_dir / "config.json").read_text())["finetune"]["config"]
    assert saved["train"]["teacher"] == str(run_dir.resolve())


def test_a_taught_run_can_start_from_an_lp_ft_head(teacher, tmp_path):
    """head_init probe reads the training split through its loaders while the teacher's
    targets are attached. The backbone's "pretrained" weights are the teacher's own file."""
    data, run_dir = teacher
    seen = []
    with listening(seen.append):
        result = tiny_run(data, output=str(tmp_path / "student"), teacher=str(run_dir),
                          pretrained=True, weights=str(run_dir / "model.safetensors"),
                          head_init="probe")  # fmt: skip
    assert result.metrics["epochs"]
    assert any(e.message.startswith("head fitted on frozen features") for e in seen)


def test_a_user_dataset_of_pil_images_can_be_taught(teacher, tmp_path):
    data, run_dir = teacher
    items = [(Image.open(p).convert("RGB"), int(p.parent.name == "dog"))
             for p in sorted(data.rglob("*.png"))]  # fmt: skip

    class Pil(torch.utils.data.Dataset):
        classes = ["cat", "dog"]

        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    result = tiny_run(Pil(), output=str(tmp_path / "student"), teacher=str(run_dir))
    assert result.metrics["epochs"]


def test_a_user_dataset_of_tensors_cannot_be_taught(teacher, tmp_path):
    _, run_dir = teacher

    class Tensors(torch.utils.data.Dataset):
        classes = ["cat", "dog"]

        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(3, 32, 32), i % 2

    with pytest.raises(ConfigError, match="this Dataset gives tensors"):
        tiny_run(Tensors(), output=str(tmp_path / "student"), teacher=str(run_dir))


def test_a_teacher_of_other_classes_fails_before_training(teacher, tmp_path):
    _, run_dir = teacher
    other = tmp_path / "other"
    for name in ("ant", "bee"):
        for i in range(4):
            make_image(other / name / f"{i}.png", COLOURS["cat"], seed=i + 10 * len(name))
    with pytest.raises(ConfigError, match="trained on the classes"):
        tiny_run(other, output=str(tmp_path / "student"), teacher=str(run_dir))
    assert not (tmp_path / "student").exists()


def test_a_multilabel_run_can_be_taught(multi_csv, tmp_path):
    """Per-label probabilities (sigmoid) mixed with the multi-hot labels; the running accuracy
    reads a soft target as on above 0.5 (a bug counted every soft target as on)."""
    teacher = tiny_run(multi_csv, output=str(tmp_path / "teacher")).run_dir
    from finetune.data.manifest import scan_csv

    info = scan_csv(multi_csv, val_split=0.0)
    paths, labels = [p for p, _ in info.train], [y for _, y in info.train]
    targets = teacher_targets(teacher, paths, labels, classes=info.classes, weight=0.5,
                              smoothing=0.1, multilabel=True)  # fmt: skip
    on = torch.zeros_like(targets, dtype=torch.bool)
    for row, y in enumerate(labels):
        on[row, list(y)] = True
    assert bool((targets[on] >= 0.5).all()) and bool((targets[~on] <= 0.5).all())
    result = tiny_run(multi_csv, output=str(tmp_path / "student"), teacher=str(teacher))
    assert 0 <= result.metrics["epochs"][0]["train_accuracy"] <= 1

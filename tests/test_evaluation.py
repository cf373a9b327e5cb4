"""evaluate(): numbers equal a hand computation from predict(), files and plots, data layouts,
unknown classes, test-time augmentation, multi-label AUC/AP."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import finetune
from finetune.evaluation import evaluate
from finetune.events import listening
from tests.conftest import make_folder, make_image, tiny_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick cat/dog run shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("shared")
    data = make_folder(root / "data")
    result = tiny_run(data, output=str(root / "run"))
    return result.run_dir, data


def _png_ok(path) -> None:
    with Image.open(path) as img:
        img.verify()
        assert img.format == "PNG"
    with Image.open(path) as img:
        assert img.size[0] > 100 and img.size[1] > 100


def test_eval_numbers_equal_a_hand_computation(image_folder, fast_overrides):
    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    seen = []
    with listening(seen.append):
        report = evaluate(result.run_dir, image_folder, top_mistakes=4)
    records = finetune.predict(result.run_dir, [image_folder], top_k=2)
    classes = ["cat", "dog"]
    truth = [classes.index(r["path"].split("/")[-2]) for r in records]
    pred = [classes.index(r["label"]) for r in records]
    matrix = [[sum(t == i and p == j for t, p in zip(truth, pred)) for j in (0, 1)] for i in (0, 1)]
    saved = json.loads((result.run_dir / "eval-data" / "eval.json").read_text())
    assert report.output == result.run_dir / "eval-data"
    assert saved["num_images"] == report.num_images == 12 and saved["split"] == "all"
    assert saved["confusion_matrix"] == matrix
    assert saved["accuracy"] == pytest.approx(sum(t == p for t, p in zip(truth, pred)) / 12)
    recalls = [matrix[i][i] / sum(matrix[i]) for i in (0, 1)]
    assert saved["balanced_accuracy"] == pytest.approx(sum(recalls) / 2)
    for saved_row, row in zip(saved["confusion_matrix_normalized"], matrix):
        assert saved_row == pytest.approx([v / sum(row) for v in row])
    f1 = []
    for c in (0, 1):
        tp = matrix[c][c]
        fp, fn = matrix[1 - c][c], matrix[c][1 - c]
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert saved["macro_f1"] == pytest.approx(sum(f1) / 2)
    # ECE by hand: 15 equal bins of the top-1 probability
    conf = np.array([r["prob"] for r in records])
    hit = np.array([t == p for t, p in zip(truth, pred)], dtype=float)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(
        abs(hit[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean() for b in set(bins)
    )
    assert saved["ece"] == pytest.approx(ece, abs=1e-4)
    assert sum(b["count"] for b in saved["reliability_bins"]) == 12
    # binary: per-class AUC/AP, predictions.csv agrees with predict
    assert {"auc", "ap"} <= set(saved["per_class"]["dog"])
    with open(report.files["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    assert [r["predicted"] for r in rows] == [r["label"] for r in records]
    assert [float(r["probability"]) for r in rows] == pytest.approx([r["prob"] for r in records])
    assert [r["correct"] == "True" for r in rows] == list(hit.astype(bool))
    assert set(report.files) == {
        "eval", "predictions", "confusion", "reliability", "roc_pr", "mistakes"
    }  # fmt: skip
    for name in ("confusion", "reliability", "roc_pr", "mistakes"):
        _png_ok(report.files[name])
    progress = [e for e in seen if e.kind == "progress" and e.data["title"] == "Evaluating"]
    assert progress and progress[-1].data["done"] is None


def test_a_test_split_is_evaluated_alone_and_missing_classes_are_fine(trained, tmp_path):
    run_dir, _ = trained
    holdout = make_folder(tmp_path / "holdout", n=3, split="train")
    make_folder(holdout, classes=("cat",), n=2, split="test")  # no dog: the model knows it
    report = evaluate(run_dir, holdout, output=tmp_path / "out", top_mistakes=0)
    assert report.split == "test" and report.num_images == 2
    assert report.report["missing_classes"] == ["dog"]
    assert report.report["per_class"]["dog"]["support"] == 0
    assert "mistakes" not in report.files and (tmp_path / "out" / "eval.json").is_file()


def test_unknown_classes_are_a_clear_error(trained, tmp_path):
    run_dir, _ = trained
    data = make_folder(tmp_path / "other", classes=("cat", "fox"), n=2)
    with pytest.raises(ValueError, match=r"does not know: fox \(the model's classes: cat, dog\)"):
        evaluate(run_dir, data)
    assert not (run_dir / "eval-other").exists()


def test_csv_manifest_with_test_rows(trained, tmp_path, write_csv):
    run_dir, data = trained
    rows = [(str(p), p.parent.name, "test" if p.stem.endswith("0") else "train")
            for p in sorted(data.glob("*/*.png"))]  # fmt: skip
    manifest = write_csv(tmp_path / "holdout.csv", ["path", "label", "split"], rows)
    report = evaluate(run_dir, manifest, top_mistakes=2)
    assert report.split == "test" and report.num_images == 2
    assert report.output == run_dir / "eval-holdout"


def _mirror_symmetric_folder(root):
    """Images constant along each row: their mirror image is the same image."""
    rng = np.random.default_rng(0)
    for c, base in (("cat", 60), ("dog", 180)):
        for i in range(3):
            column = np.clip(base + rng.normal(0, 40, (36, 1, 3)), 0, 255).astype(np.uint8)
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(column, 44, axis=1)).save(root / c / f"{i}.png")
    return root


def test_tta_changes_nothing_for_mirror_symmetric_images(trained, tmp_path):
    run_dir, data = trained
    sym = _mirror_symmetric_folder(tmp_path / "sym")
    plain = finetune.predict(run_dir, sym, top_k=2)
    flipped = finetune.predict(run_dir, sym, top_k=2, tta=True)
    assert [r["label"] for r in plain] == [r["label"] for r in flipped]
    assert [r["prob"] for r in plain] == pytest.approx([r["prob"] for r in flipped], abs=1e-5)
    a = evaluate(run_dir, sym, output=tmp_path / "a", top_mistakes=0)
    b = evaluate(run_dir, sym, output=tmp_path / "b", top_mistakes=0, tta=True)
    assert b.report["tta"] is True and a.accuracy == b.accuracy
    assert a.ece == pytest.approx(b.ece, abs=1e-5)
    # on ordinary images TTA still gives probabilities: in [0, 1], summing to 1
    records = finetune.predict(run_dir, data, top_k=2, tta=True)
    untouched = finetune.predict(run_dir, data, top_k=2)
    assert any(r["prob"] != u["prob"] for r, u in zip(records, untouched))  # TTA did something
    for r in records:
        assert 0 <= r["prob_2"] <= r["prob"] <= 1 and r["prob"] + r["prob_2"] == pytest.approx(
            1, abs=1e-5
        )


def test_multilabel_eval_writes_per_label_auc_and_ap(multi_csv, fast_overrides):
    result = finetune.adapt("test_resnet", multi_csv, verbose=False, **fast_overrides)
    report = evaluate(result.run_dir, multi_csv, tta=True, top_mistakes=4)
    saved = json.loads(report.files["eval"].read_text())
    assert report.multilabel and report.mAP == pytest.approx(saved["mAP"])
    assert set(saved["per_label"]) == {"bright", "cool", "warm"}
    for label in saved["per_label"].values():
        assert {"auc", "ap", "f1", "threshold"} <= set(label)
        assert 0 <= label["auc"] <= 1 and 0 <= label["ap"] <= 1
    assert report.num_images == 19 and 0 <= report.accuracy <= 1
    for name in ("per_label", "reliability", "roc_pr", "mistakes"):
        _png_ok(report.files[name])
    with open(report.files["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert {"path", "true", "predicted", "probability", "correct", "prob_warm"} <= set(rows[0])
    # per-label AUC and AP equal scikit-learn's on the model's probabilities. Regression: the
    # 6-decimal probabilities of predictions.csv can tie where the model's do not (a 1-epoch
    # random-init model scores images nearly alike), which moved sklearn's AUC by one pair
    from sklearn.metrics import average_precision_score, roc_auc_score

    from finetune.inference import image_logits, load_for_inference

    run = load_for_inference(result.run_dir)
    _, logits = image_logits(run, [r["path"] for r in rows], tta=True)
    probs = torch.sigmoid(logits)
    for j, (name, label) in enumerate(saved["per_label"].items()):
        assert run.labels[j] == name
        truth = [name in r["true"].split(";") for r in rows]
        scores = probs[:, j].tolist()
        assert label["auc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-4)
        assert label["ap"] == pytest.approx(average_precision_score(truth, scores), abs=1e-4)


def test_single_label_model_on_multilabel_data_is_a_clear_error(trained, multi_csv):
    run_dir, _ = trained
    with pytest.raises(ValueError, match="multi-label data but .* single-label model"):
        evaluate(run_dir, multi_csv)


def test_eval_on_missing_data_names_it(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate(trained[0], tmp_path / "nowhere")
    make_image(tmp_path / "flat" / "a.png", (1, 2, 3))  # no class folders
    with pytest.raises(finetune.DataError, match="no images to evaluate"):
        evaluate(trained[0], tmp_path / "flat")


def test_evaluating_the_training_folder_warns(image_folder, fast_overrides):
    # regression (review): eval on the run's own data scored training images without a word
    import finetune

    run = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    with pytest.warns(UserWarning, match="is the data .* trained on: these scores include"):
        evaluate(run.run_dir, image_folder)


def test_evaluating_the_val_split_of_a_refit_warns(split_folder, fast_overrides):
    # a refit (train_on_val, tune's final trial) trained on val/: scoring it there is optimistic
    run = finetune.adapt(
        "test_resnet", split_folder, verbose=False, train_on_val=True, **fast_overrides
    )
    with pytest.warns(UserWarning, match="is the data .* trained on"):
        evaluate(run.run_dir, split_folder / "val")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # test/ was held out
        evaluate(run.run_dir, split_folder / "test")

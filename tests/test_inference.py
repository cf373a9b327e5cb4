"""predict(): agrees with plain timm on the run directory, torchvision runs, unreadable images,
multi-band runs."""

import pytest
import timm
import torch
from PIL import Image

import finetune
from finetune.data.images import load_bands


def test_timm_local_dir_and_predict_agree(split_folder, fast_overrides):
    result = finetune.adapt("test_efficientnet", split_folder, verbose=False, **fast_overrides)
    assert "test" in result.metrics
    image = split_folder / "test" / "dog" / "dog0.png"
    records = finetune.predict(result.run_dir, [image], top_k=2)
    # a plain timm user, no finetune code: local-dir config + safetensors weights
    model = timm.create_model(f"local-dir:{result.run_dir}", pretrained=True).eval()
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (3, 32, 32)
    x = timm.data.create_transform(**cfg)(Image.open(image).convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        probs = model(x).softmax(-1)[0]
    top = int(probs.argmax())
    assert records[0]["label"] == model.pretrained_cfg["label_names"][top]
    assert records[0]["prob"] == pytest.approx(float(probs[top]), abs=1e-5)
    assert set(records[0]) == {"path", "label", "prob", "label_2", "prob_2"}


def test_torchvision_run_round_trips(image_folder, fast_overrides):
    result = finetune.adapt("tv:resnet18", image_folder, verbose=False, **fast_overrides)
    records = finetune.predict(result.run_dir, [image_folder / "cat"])
    assert len(records) == 6 and {r["label"] for r in records} <= {"cat", "dog"}


def test_predict_skips_an_unreadable_image_with_a_warning(image_folder, fast_overrides):
    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    (image_folder / "cat" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        records = finetune.predict(result.run_dir, [image_folder / "cat"])
    assert len(records) == 6


def test_thirteen_band_run_and_predict(tmp_path, fast_overrides, make_tiles):
    root = make_tiles(tmp_path / "s2")
    result = finetune.adapt(
        "test_resnet", root, verbose=False, in_chans=13, dihedral=True, **fast_overrides
    )
    assert result.backbone.input_size[0] == 13
    records = finetune.predict(result.run_dir, [root / "water"], top_k=2)
    assert len(records) == 5 and {r["label"] for r in records} <= {"forest", "water"}
    import timm

    model = timm.create_model(f"local-dir:{result.run_dir}", pretrained=True).eval()
    x = load_bands(root / "water" / "0.tif", 13)[None, :, :, :]
    x = torch.nn.functional.interpolate(x, size=32)
    assert model(x).shape == (1, 2)  # plain timm rebuilds the 13-band model


def test_predict_preprocesses_exactly_as_validation_did(image_folder, fast_overrides):
    # predict builds its transform with build_eval_transform from the run's own data config:
    # its probabilities equal the softmax of the validation logits of the same images
    import torch

    from finetune.data.datasets import build_loaders, scan_data
    from finetune.train.runtime import Task
    from finetune.train.trainer import Trainer

    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    data = scan_data(str(image_folder), result.config)
    loaders = build_loaders(str(image_folder), data, result.config, result.backbone)
    trainer = Trainer(
        result.model,
        policy=result.policy,
        task=Task(mean=result.backbone.mean, std=result.backbone.std),
    )
    _, logits, _ = trainer.evaluate(loaders["val"])
    paths = [p for p, _ in data.val]
    records = finetune.predict(result.run_dir, paths, top_k=2)
    probs = logits.softmax(-1)
    for row, record in zip(probs, records):
        top = torch.topk(row, 2)
        assert record["prob"] == pytest.approx(float(top.values[0]), abs=1e-5)
        assert record["label"] == result.classes[int(top.indices[0])]


def test_predict_takes_one_path_or_a_pil_image_and_reports_progress(image_folder, fast_overrides):
    from finetune.events import listening

    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    path = image_folder / "dog" / "dog1.png"
    seen = []
    with listening(seen.append):
        one = finetune.predict(result.run_dir, str(path), top_k=2)
    assert len(one) == 1 and one[0]["path"] == str(path)
    bars = [e.data for e in seen if e.kind == "progress" and e.data["title"] == "Predicting"]
    assert bars[0]["done"] == 0 and bars[-1]["done"] is None and bars[-2]["done"] == 1
    with Image.open(path) as img:
        records = finetune.predict(result.run_dir, [img, path, img.convert("L")], top_k=2)
        alone = finetune.predict(result.run_dir, img)
    assert [r["path"] for r in records] == ["<image 0>", str(path), "<image 2>"]
    assert records[0]["prob"] == pytest.approx(one[0]["prob"], abs=1e-6)  # same preprocessing
    assert alone[0]["path"] == "<image 0>" and alone[0]["label"] == one[0]["label"]


def test_predict_with_tta_on_a_multilabel_run_gives_probabilities(multi_csv, fast_overrides):
    result = finetune.adapt("test_resnet", multi_csv, verbose=False, **fast_overrides)
    records = finetune.predict(result.run_dir, multi_csv.parent / "img", tta=True)
    assert len(records) == 18
    for r in records:
        probs = [r[f"prob_{n}"] for n in ("bright", "cool", "warm")]
        assert all(0 <= p <= 1 for p in probs)


def test_image_logits_keep_the_order_across_batches_with_unreadable_files(
    image_folder, fast_overrides, tmp_path
):
    """Images are decoded in threads ahead of the model: each logit row must still belong to
    its image, with unreadable files (skipped) anywhere, batch boundaries included."""
    from finetune.inference import image_logits, load_for_inference

    result = finetune.adapt("test_resnet", image_folder, verbose=False, **fast_overrides)
    run = load_for_inference(result.run_dir)
    good = sorted((image_folder / "cat").iterdir()) + sorted((image_folder / "dog").iterdir())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    images = [broken, *good[:5], broken, *good[5:], broken]  # 0, 6 and the last are unreadable
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        kept, logits = image_logits(run, images, batch_size=3)
    assert kept == [i for i, path in enumerate(images) if path != broken]
    for row, i in enumerate(kept):
        _, alone = image_logits(run, [images[i]], batch_size=1)
        assert torch.allclose(logits[row], alone[0], atol=1e-5), images[i]

"""Issue 3: --linear-probe --cache-features trains the head on features computed once."""

import torch

import finetune
from finetune.models.backbones import load_backbone
from finetune.models.heads import replace_head
from finetune.train.features import extract_features


def test_head_on_cached_features_equals_the_full_model():
    model, info = load_backbone("test_efficientnet", pretrained=False)
    replace_head(model, 3, info)
    model.eval()
    images = torch.randn(6, 3, 48, 48)
    loader = [(images[:4], torch.zeros(4)), (images[4:], torch.ones(2))]
    features, targets = extract_features(model, info.classifier, loader, torch.device("cpu"))
    assert features.shape == (6, info.num_features) and targets.tolist() == [0] * 4 + [1] * 2
    with torch.inference_mode():
        assert torch.allclose(model.get_classifier()(features), model(images), atol=1e-5)


def test_cached_linear_probe_run(image_folder, fast_overrides):
    torch.manual_seed(0)  # adapt seeds with train.seed=0 before it builds the model
    reference, _ = load_backbone("test_resnet", pretrained=False)
    result = finetune.adapt(
        "test_resnet",
        image_folder,
        verbose=False,
        linear_probe=True,
        cache_features=True,
        **{**fast_overrides, "epochs": 3},
    )
    trained = result.model.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, trained[key]), key  # backbone and BN stats untouched
    assert result.metrics["val"]["num_samples"] == 2
    records = finetune.predict(result.run_dir, [image_folder])
    assert len(records) == 12

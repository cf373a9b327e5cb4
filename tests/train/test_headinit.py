"""LP-FT head init: the linear fit, when a run uses it, and the hand-over to the model."""

from types import SimpleNamespace

import pytest
import torch

from finetune.config import FinetuneConfig
from finetune.train.headinit import L2_GRID, fit_linear, fit_probe, init_head, wants_probe


def test_fit_linear_separates_separable_classes():
    x = torch.cat([torch.randn(30, 5) + 4, torch.randn(30, 5) - 4])
    y = torch.tensor([0] * 30 + [1] * 30)
    w, b, acc = fit_linear(x, y, num_classes=2, label_smoothing=0.1)
    assert acc == 1.0 and w.shape == (2, 5)
    # label smoothing keeps the logits finite: the head hands over moderate confidences
    assert float((x @ w.T + b).abs().max()) < 20


def test_fit_linear_multilabel():
    x = torch.randn(40, 3)
    y = torch.stack([(x[:, 0] > 0), (x[:, 1] > 0)], 1).float()
    _, _, acc = fit_linear(x, y, num_classes=2, multilabel=True)
    assert acc > 0.9


def test_fit_linear_on_one_hot_soft_targets_matches_class_indices():
    # regression: a teacher's soft targets went through CrossEntropyLoss, which smoothed them a
    # second time and dropped the class weights' normalisation
    x = torch.cat([torch.randn(20, 4) + 1, torch.randn(20, 4) - 1])
    y = torch.tensor([0] * 20 + [1] * 20)
    fit = dict(num_classes=2, class_weights=torch.tensor([1.0, 2.0]), l2=0.1)
    w_hard, b_hard, _ = fit_linear(x, y, **fit)
    w_soft, b_soft, _ = fit_linear(x, torch.nn.functional.one_hot(y, 2).float(), **fit)
    assert torch.allclose(w_soft, w_hard, atol=1e-4) and torch.allclose(b_soft, b_hard, atol=1e-4)


def _shifted(n: int, generator):
    """400 noisy features whose class means differ along one spread-out direction (Bayes
    accuracy 0.93), as pooled CNN features differ: no single feature separates the classes."""
    y = torch.arange(n) % 2
    x = torch.randn(n, 400, generator=generator) + (y[:, None] - 0.5) * 3 * torch.ones(400) / 20
    return x, y


def test_fit_probe_chooses_its_l2_on_held_out_images():
    """Regression: a fixed small L2 on more features (1,280) than images (1,259) separated
    digits' training set and scored 0.48 on its validation images, a tuned probe 0.91."""
    g = torch.Generator().manual_seed(0)
    (x, y), (x_new, y_new) = _shifted(120, g), _shifted(1000, g)
    w, b, acc, l2 = fit_probe(x, y, num_classes=2)
    assert l2 > L2_GRID[0] and acc is not None  # 24 held-out images chose it
    assert float(((x_new @ w.T + b).argmax(1) == y_new).float().mean()) > 0.75


def test_fit_probe_folds_the_standardisation_into_the_head():
    x = torch.randn(50, 3) * torch.tensor([100.0, 1.0, 0.01]) + torch.tensor([5.0, -3.0, 7.0])
    y = (x[:, 1] > -3).long()
    w, b, _, l2 = fit_probe(x, y, num_classes=2)
    z = (x - x.mean(0)) / x.std(0)
    w_z, b_z, _ = fit_linear(z, y, num_classes=2, l2=l2)
    assert torch.allclose(x @ w.T + b, z @ w_z.T + b_z, atol=1e-3)


def _built(head=None, classifier="fc"):
    base = torch.nn.Sequential()
    base.add_module(classifier, head or torch.nn.Linear(4, 2))
    return SimpleNamespace(base=base, info=SimpleNamespace(classifier=classifier))


@pytest.mark.parametrize(
    "overrides,head,use,why",
    [
        ({}, None, True, "LP-FT"),
        ({"head_init": "random"}, None, False, "head_init random"),
        # under a budget the feature pass costs epochs: random (bench numbers in headinit.py)
        ({"budget": "90s"}, None, False, "--budget"),
        ({"budget": "90s", "head_init": "probe"}, None, True, "LP-FT"),
        ({"pretrained": False}, None, False, "not pretrained"),
        ({"linear_probe": True}, None, False, "linear probe"),
        ({"peft": "lora"}, None, False, "peft"),
        ({}, torch.nn.Sequential(torch.nn.Linear(4, 2)), False, "not one Linear"),
    ],
)
def test_wants_probe(overrides, head, use, why):
    cfg = FinetuneConfig().with_overrides(**overrides)
    got, reason = wants_probe(cfg, _built(head))
    assert got is use and why in reason


def test_probe_asked_for_where_it_cannot_apply_is_an_error():
    cfg = FinetuneConfig().with_overrides(head_init="probe", pretrained=False)
    with pytest.raises(ValueError, match="--head-init random"):
        wants_probe(cfg, _built())


def _resnet_and_loader():
    import timm

    from finetune.train.runtime import Task

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    built = SimpleNamespace(
        base=model, info=SimpleNamespace(classifier="fc"), policy=SimpleNamespace(frozen_bn=())
    )
    images = torch.randint(0, 255, (16, 3, 64, 64), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 8)
    images[labels == 1] //= 4  # dark images are class 1: learnable from pooled features
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    task = Task(2, False, None, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return built, loader, task


def test_init_head_loads_the_fitted_head_and_keeps_the_backbone_weights():
    from finetune.train.runtime import Runtime

    built, loader, task = _resnet_and_loader()
    model = built.base
    weights = {k: v.clone() for k, v in model.named_parameters() if not k.startswith("fc")}
    fit = init_head(built, loader, runtime=Runtime(), task=task, cfg=FinetuneConfig())
    assert fit.images == 16 and fit.holdout_accuracy is None  # 3 held out: too few to choose
    assert fit.l2 == L2_GRID[len(L2_GRID) // 2]
    params = dict(model.named_parameters())
    assert all(torch.equal(weights[k], params[k]) for k in weights)
    assert all(m.momentum == 0.1 for m in model.modules() if hasattr(m, "momentum"))
    assert model.training  # left in the mode it was in


def _features(model, x, *, train: bool):
    captured = []
    hook = model.fc.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    model.train(train)
    with torch.no_grad():
        model(x)
    hook.remove()
    return captured[0]


def test_the_head_is_fitted_on_the_features_training_sees():
    """Regression: LP-FT fitted the head on eval-mode features normalised with the pretrained
    (ImageNet) BatchNorm statistics while training normalises with batch statistics; on digits
    the first steps' loss (2.45) was above a random head's (ln 10), so LP-FT gained nothing.
    Now the trainable BatchNorm layers take the data's statistics in the feature pass."""
    from finetune.train.runtime import Runtime

    built, loader, task = _resnet_and_loader()
    model = built.base
    batches = [(b.float() - 127.5) / 63.75 for b, _ in loader]

    def gap():  # eval-mode vs batch-statistics features (per loader batch, as training), relative
        a = torch.cat([_features(model, x, train=False) for x in batches])
        b = torch.cat([_features(model, x, train=True) for x in batches])
        return float((a - b).norm() / b.norm())

    with torch.no_grad():  # statistics of another data set, as pretrained weights bring
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(4.0)
    before = gap()
    init_head(built, loader, runtime=Runtime(), task=task, cfg=FinetuneConfig())
    after = gap()
    # what remains is the batches' own spread around the data's statistics (8 images here)
    assert after < 0.25 * before

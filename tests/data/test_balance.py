"""finetune.data.balance: inverse-frequency class weights and balanced sampling weights."""

import pytest
import torch

from finetune.config import FinetuneConfig
from finetune.data.balance import class_balance
from finetune.data.folder import scan_folder
from finetune.data.loaders import build_loader
from finetune.data.manifest import scan_csv
from tests.conftest import make_folder


def test_balanced_sampler_gives_unlabelled_images_their_share(multi_csv):
    info = scan_csv(multi_csv, val_split=0.0)
    _, weights = class_balance(info, FinetuneConfig().with_overrides(sampler="balanced"))
    empty = [w for (_, y), w in zip(info.train, weights.tolist()) if not y]
    assert empty and min(empty) > 1.0  # a group of its own, not the minimum weight of 1


def _imbalanced(tmp_path):
    root = tmp_path / "imb"
    make_folder(root, classes=("cat",), n=16)
    make_folder(root, classes=("dog",), n=4)
    return scan_folder(root, val_split=0.0)


def test_class_weights_are_inverse_frequency(tmp_path):
    info = _imbalanced(tmp_path)
    cfg = FinetuneConfig().with_overrides(class_weights="auto", sampler="balanced")
    loss_weights, sample_weights = class_balance(info, cfg)
    assert loss_weights.tolist() == pytest.approx([20 / (2 * 16), 20 / (2 * 4)])
    assert len(sample_weights) == 20


def test_balanced_sampler_draws_classes_evenly(tmp_path):
    info = _imbalanced(tmp_path)
    _, weights = class_balance(info, FinetuneConfig().with_overrides(sampler="balanced"))
    labels = torch.tensor([y for _, y in info.train])
    loader = build_loader(
        torch.utils.data.TensorDataset(labels),
        batch_size=20,
        training=True,
        num_workers=0,
        seed=0,
        sample_weights=weights,
    )
    drawn = torch.cat([torch.cat([b[0] for b in loader]) for _ in range(20)])
    assert 0.4 < drawn.float().mean() < 0.6  # dogs are 20 % of the data, ~50 % of the draws

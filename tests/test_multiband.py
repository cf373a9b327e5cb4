"""Issue 4: multi-band TIFFs (satellite tiles) with the first conv adapted, timm's in_chans way."""

import numpy as np
import pytest
import tifffile
import torch

import finetune
from finetune.data.folder import scan_folder
from finetune.data.images import load_bands
from finetune.models.backbones import load_backbone


def _tiles(root, bands=13, n=5, bands_first=False):
    rng = np.random.default_rng(0)
    for c, level in (("forest", 9000), ("water", 30000)):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(rng.normal(level, 3000, (24, 24, bands)), 0, 65535).astype(np.uint16)
            if bands_first:  # planar: one plane per band
                tifffile.imwrite(
                    root / c / f"{i}.tif",
                    np.moveaxis(arr, -1, 0),
                    photometric="minisblack",
                    planarconfig="separate",
                )
            else:  # pixel-interleaved samples
                tifffile.imwrite(
                    root / c / f"{i}.tif", arr, photometric="minisblack", planarconfig="contig"
                )
    return root


@pytest.mark.parametrize("bands_first", [False, True])
def test_bands_load_scaled_and_in_order(tmp_path, bands_first):
    root = _tiles(tmp_path / "s2", bands_first=bands_first)
    x = load_bands(root / "water" / "0.tif", 13)
    assert x.shape == (13, 24, 24) and x.dtype == torch.float32
    assert 0.3 < float(x.mean()) < 0.6  # uint16 / 65535, not clipped to 8 bit
    info = scan_folder(root)
    assert {c.mode for c in info.checks.values()} == {"13-band uint16"} and not info.skipped


def test_pretrained_rgb_filters_are_adapted_to_the_band_count():
    rgb, _ = load_backbone("tf_efficientnet_lite0")
    bands, info = load_backbone("tf_efficientnet_lite0", in_chans=4)
    w_rgb, w4 = rgb.conv_stem.weight, bands.conv_stem.weight
    assert w4.shape == (32, 4, 3, 3) and info.input_size[0] == 4 and len(info.mean) == 4
    assert torch.allclose(w4[:, :3], w_rgb * 3 / 4) and torch.allclose(
        w4[:, 3], w_rgb[:, 0] * 3 / 4
    )
    assert torch.equal(bands.blocks[3][0].conv_pw.weight, rgb.blocks[3][0].conv_pw.weight)


def test_thirteen_band_run_and_predict(tmp_path, fast_overrides):
    root = _tiles(tmp_path / "s2")
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


def test_multiband_tiffs_without_in_chans_are_an_error(tmp_path, fast_overrides):
    root = _tiles(tmp_path / "s2")
    with pytest.raises(finetune.DataError, match="13-band image.*--in-chans 13"):
        finetune.adapt("test_resnet", root, verbose=False, **fast_overrides)


def test_four_band_rgbn_is_multiband_but_rgba_is_not(tmp_path):
    from finetune.data.scan import check_file

    rgbn, rgba = tmp_path / "rgbn.tif", tmp_path / "rgba.tif"
    data = np.full((16, 16, 4), 100, np.uint8)
    tifffile.imwrite(rgbn, data, photometric="rgb", extrasamples=["unspecified"])
    tifffile.imwrite(rgba, data, photometric="rgb", extrasamples=["unassalpha"])
    assert check_file(str(rgbn)).mode == "4-band uint8"
    assert check_file(str(rgba)).mode == "RGBA"


def test_band_count_must_match_in_chans(tmp_path, fast_overrides):
    root = _tiles(tmp_path / "s2", bands=4)
    with pytest.raises(finetune.DataError, match="4-band image.*--in-chans 4"):
        finetune.adapt("test_resnet", root, verbose=False, **fast_overrides)
    with pytest.raises(finetune.DataError, match="4 bands, but --in-chans is 13"):
        finetune.adapt("test_resnet", root, verbose=False, in_chans=13, **fast_overrides)


def test_tiff_bomb_is_rejected_from_the_header(tmp_path):
    from finetune.data.scan import check_file

    path = tmp_path / "big.tif"
    tifffile.imwrite(
        path, np.zeros((5, 200, 200), np.uint8), photometric="minisblack", planarconfig="separate"
    )
    assert check_file(str(path), max_pixels=1000).problem.startswith("over the pixel limit")

import numpy as np
import pytest
from PIL import Image

from finetune.data.datasets import ImageFileDataset
from finetune.data.folder import scan_folder
from finetune.data.images import load_image
from finetune.errors import DataError
from tests.conftest import COLOURS, make_folder, make_image


def test_class_folder_layout_is_split_stratified_and_seeded(image_folder):
    info = scan_folder(image_folder, val_split=0.5, seed=1)
    assert info.layout == "classes" and info.classes == ("cat", "dog")
    assert info.counts() == {"train": [3, 3], "val": [3, 3]}
    assert scan_folder(image_folder, val_split=0.5, seed=1) == info
    assert scan_folder(image_folder, val_split=0.5, seed=2).val != info.val
    assert not set(info.train) & set(info.val)


def test_split_layout(split_folder):
    info = scan_folder(split_folder)
    assert info.layout == "splits"
    assert info.counts() == {"train": [6, 6], "val": [2, 2], "test": [2, 2]}


@pytest.mark.parametrize(
    "formats", [(".jpg", "RGB"), (".bmp", "L"), (".tiff", "RGBA"), (".webp", "RGB"), (".png", "P")]
)
def test_common_formats_and_modes_become_rgb(tmp_path, formats):
    ext, mode = formats
    path = make_image(tmp_path / f"x{ext}", COLOURS["cat"], mode=mode)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 32)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "x16.png")
    assert Image.open(tmp_path / "x16.png").mode.startswith("I")
    value = np.asarray(load_image(tmp_path / "x16.png"))[0, 0, 0]
    assert value == int(40000 * 255 / 65535)  # PIL's convert("L") would clip to 255


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: None, "data folder not found"),
        (lambda r: r.mkdir(), "no class folders found"),
        (lambda r: make_folder(r, classes=("cat",)), "only one class folder ('cat')"),
        (
            lambda r: (make_folder(r), (r / "fox").mkdir()),
            "fox: class folder has no readable images",
        ),
        (
            lambda r: (
                make_folder(r, split="train"),
                make_folder(r, classes=("cat", "fox"), split="val"),
            ),
            "classes ['fox'] are not in",
        ),
    ],
)
def test_bad_folders_fail_with_the_path(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises((DataError, FileNotFoundError), match=None) as e:
        scan_folder(root)
    assert message in str(e.value)


def _break_images(root):
    truncated = root / "cat" / "cat0.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "text.jpg").write_text("not an image")
    return truncated


def test_bad_images_are_skipped_with_a_warning_naming_them(image_folder):
    truncated = _break_images(image_folder)
    with pytest.warns(UserWarning, match="skipping unreadable image .*cat0.png"):
        info = scan_folder(image_folder)
    skipped = dict(info.skipped)
    assert set(skipped) == {
        str(truncated),
        str(image_folder / "dog" / "empty.png"),
        str(image_folder / "dog" / "text.jpg"),
    }
    assert skipped[str(image_folder / "dog" / "empty.png")] == "empty file"
    assert all(p not in skipped for p, _ in info.train + info.val)


def test_strict_fails_on_the_first_bad_image(image_folder):
    _break_images(image_folder)
    with pytest.raises(DataError, match=r"unreadable image .* drop --strict"):
        scan_folder(image_folder, strict=True)


def test_dataset_survives_a_file_broken_after_the_scan(image_folder):
    info = scan_folder(image_folder, val_split=0.0)
    path = info.train[0][0]
    open(path, "wb").close()
    dataset = ImageFileDataset(info.train, transform=lambda img: img.size)
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        size, label = dataset[0]
    assert size == (40, 32)
    with pytest.raises(DataError):
        ImageFileDataset(info.train, transform=lambda img: img, strict=True)[0]


def test_split_keeps_a_training_image_in_every_class(tmp_path):
    make_folder(tmp_path / "d", classes=("cat",), n=1)
    make_folder(tmp_path / "d", classes=("dog",), n=4)
    info = scan_folder(tmp_path / "d", val_split=0.6)
    assert info.counts() == {"train": [1, 2], "val": [0, 2]}


def test_cmyk_and_exif_rotation(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk)
    img = load_image(cmyk)
    assert img.mode == "RGB" and img.getpixel((5, 5))[0] > 200  # red survives the conversion
    rotated = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (10, 20, 30)).save(rotated, exif=exif)
    assert load_image(rotated).size == (20, 40)

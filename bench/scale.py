"""How the cost grows with the data: scan time, first and steady epoch images/s, peak memory and
image-cache size for N generated images, as a folder and the same images packed into shards.

For each N (``--sizes``, default 2000 20000 200000) small JPEGs (``--px`` square, two classes of
distinct colours) are written to a temporary folder and packed with ``finetune pack``; then, for
the folder and for the shards, a fresh Python process runs ``finetune.adapt`` for ``--epochs``
epochs of ``--backbone`` (random init) with its own empty cache folder, and reports the scan's
seconds (until the data summary event; for shards it includes indexing them), the seconds until
the first epoch starts (scan, model, image-cache build), the first and the last epoch's training
images/s (metrics.jsonl), its peak RSS (``ru_maxrss``: all resident pages, shared libraries and
touched file pages included), its peak RssAnon (private memory: heap, Python objects, tensors;
``/proc/self/status`` sampled every 50 ms, Linux only, 0 elsewhere) and the bytes of the disk image
cache. The table gives each per image, so that linear growth reads as a flat column.

Targets (issue 12): steady images/s at 200k within 10 % of 2k; peak RSS growing by at most a few
hundred bytes per image. Heavy: 200k images take a long time to generate and train on 2 cores.

    python bench/scale.py --sizes 200 --epochs 2   # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, threading, time
def rss_anon():  # private memory (heap, Python objects, tensors); RSS adds file pages (libraries)
    with open("/proc/self/status") as f:
        return next((int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:")), 0)
peak_anon = [0]
def sample_anon():  # the kernel keeps the peak of RSS only (ru_maxrss), not of RssAnon
    while True:
        peak_anon[0] = max(peak_anon[0], rss_anon())
        time.sleep(0.05)
threading.Thread(target=sample_anon, daemon=True).start()
import finetune
from finetune.events import listening
args = json.loads(sys.argv[1])
marks = {}
def listen(event):
    if event.message.startswith("data ") and "scan_end" not in marks:
        marks["scan_end"] = time.perf_counter()
    if event.kind == "epoch" and "ready" not in marks:  # when the first epoch started
        marks["ready"] = time.perf_counter() - event.data["record"]["epoch_seconds"]
t0 = time.perf_counter()
with listening(listen):
    result = finetune.adapt(args["backbone"], args["data"], verbose=False, pretrained=False,
                            epochs=args["epochs"], img_size=args["img_size"], batch_size=64,
                            num_workers=0, warmup_epochs=0.0, cache_images=args["cache"],
                            output=args["output"], val_split=0.1)
total = time.perf_counter() - t0
lines = [json.loads(x) for x in open(os.path.join(args["output"], "metrics.jsonl"))]
print(json.dumps(dict(
    scan_s=marks.get("scan_end", t0) - t0,
    ready_s=marks.get("ready", t0) - t0,
    total_s=total,
    first_ips=lines[0]["train_images_per_s"],
    steady_ips=lines[-1]["train_images_per_s"],
    peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    peak_anon=max(peak_anon[0], rss_anon()),
)))
"""


def make_images(folder: Path, n: int, px: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40)}
    for c in colours:
        (folder / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = "red" if i % 2 else "green"
        noise = rng.normal(0, 30, (px, px, 3))
        arr = np.clip(np.array(colours[c])[None, None] + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / c / f"{i:07d}.jpg", quality=90)


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_case(data: Path, work: Path, args, label: str) -> dict:
    cache = work / f"cache-{label}"
    env = {**os.environ, "FINETUNE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    spec = dict(data=str(data), output=str(work / f"run-{label}"), backbone=args.backbone,
                epochs=args.epochs, img_size=args.img_size, cache=args.cache)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{label}: the run failed\n{out.stderr[-3000:]}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    images = cache / "images"
    record["cache_bytes"] = disk_bytes(images) if images.is_dir() else 0
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    parser.add_argument("--px", type=int, default=64, help="side of the generated JPEGs")
    parser.add_argument("--img-size", type=int, default=32, help="training input size")
    parser.add_argument("--epochs", type=int, default=2, help="at least 2: first + steady")
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--cache", default="disk", choices=["disk", "memory", "none"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from finetune.data.pack import pack_data

    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-scale-") as tmp:
        for n in args.sizes:
            work = Path(tmp) / str(n)
            t0 = time.perf_counter()
            make_images(work / "folder", n, args.px)
            made = time.perf_counter() - t0
            pack_data(work / "folder", work / "shards", shard_size="100MB")
            print(f"N={n}: generated in {made:.0f} s, packed; training...", file=sys.stderr)
            for label in ("folder", "shards"):
                record = run_case(work / label, work, args, label)
                rows.append((n, label, record))
    header = ("N", "data", "scan s", "scan us/img", "ready s", "epoch1 img/s", "steady img/s",
              "peak RSS MB", "RSS B/img", "peak anon MB", "anon B/img", "cache MB",
              "cache B/img")  # fmt: skip
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for n, label, r in rows:
        print(" | ".join([
            f"{n:,}", label, f"{r['scan_s']:.1f}", f"{1e6 * r['scan_s'] / n:.0f}",
            f"{r['ready_s']:.1f}",
            f"{r['first_ips']:.0f}", f"{r['steady_ips']:.0f}", f"{r['peak_rss'] / 1e6:.0f}",
            f"{r['peak_rss'] / n:,.0f}", f"{r['peak_anon'] / 1e6:.0f}",
            f"{r['peak_anon'] / n:,.0f}", f"{r['cache_bytes'] / 1e6:.1f}",
            f"{r['cache_bytes'] / n:,.0f}",
        ]))  # fmt: skip
    first = {label: r for n, label, r in rows if n == rows[0][0]}
    for n, label, r in rows:
        if n != rows[0][0]:
            ratio = r["steady_ips"] / max(first[label]["steady_ips"], 1e-9)
            extra = max(n - rows[0][0], 1)
            growth = (r["peak_rss"] - first[label]["peak_rss"]) / extra
            anon = (r["peak_anon"] - first[label]["peak_anon"]) / extra
            print(f"{label} N={n:,}: steady img/s {ratio:.2f}x of N={rows[0][0]:,}; peak RSS "
                  f"+{growth:,.0f} B, peak RssAnon (private) +{anon:,.0f} B per extra "
                  "image")  # fmt: skip


if __name__ == "__main__":
    main()

"""Cost of looking at results: dedup (hashing + pair search), prediction maps, run reports.

1. ``find_duplicates`` on all 3000 real EuroSAT tiles (64 x 64 JPEG) and all 420 UC Merced tiles
   (~256 x 256 TIFF) of ../shared/data: images/s, and how many near-duplicate groups the default
   pHash threshold (4 bits) reports in each (real, not planted: worth reading, see RESULTS.md).
2. ``prediction_map`` on real predictions of a grid of GeoTIFF tiles cut from the NAIP tile in
   ../shared/data/chesapeake/tile_downsampled (bundle trained on the package's EuroSAT sample):
   seconds and HTML size with and without thumbnails, and the static PNG.
3. ``build_report`` of that bundle.

    .venv/bin/python benchmarks/looking.py               # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/looking.py --grid 10     # 10 x 10 map tiles
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine, markdown_table, timed  # noqa: E402


def cut(out: Path, n: int) -> Path:
    from landsight.data.tiling import cut_tiles

    scene = DATA / "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"  # 260 x 260 px
    cut_tiles(scene, out, size=260 // n, overwrite=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=int, default=20, help="map tiles per side (default 20: 400 tiles)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="landsight-bench-looking-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlruns.db'}")
    os.environ.setdefault("LANDSIGHT_CACHE_DIR", str(work / "cache"))

    from landsight.classify.predict import predict
    from landsight.classify.train import train
    from landsight.data.sample import eurosat_sample
    from landsight.results.dedup import find_duplicates
    from landsight.results.maps import prediction_map
    from landsight.results.report import build_report

    print(f"machine: {machine()}\n")
    rows = []
    sources = (("EuroSAT RGB, 64 px JPEG", DATA / "eurosat_rgb"), ("UC Merced, 256 px TIFF", DATA / "ucmerced"))
    for name, source in sources:
        with timed() as t:
            result = find_duplicates(source, progress=False)
        rows.append([name, result.n_images, f"{t.seconds:.1f}", f"{result.n_images / t.seconds:.0f}",
                     result.n_groups, len(result.groups), f"{t.foreign:.0%}"])  # fmt: skip
        result.groups.to_csv(work / f"groups_{source.name}.csv", index=False)
    print("find_duplicates (pHash, threshold 4 bits, 2 decoding threads)\n")
    print(markdown_table(["data", "images", "seconds", "images/s", "groups", "images in groups", "foreign CPU"], rows))

    bundle = train(eurosat_sample(), out=work / "sample.landsight", test_size=0.2, progress=False,
                   overwrite=True).bundle_path
    tiles = cut(work / "tiles", args.grid)
    preds = predict(bundle, tiles, out=work / "preds.parquet", progress=False, overwrite=True)
    rows = []
    for label, kwargs in (
        ("HTML, thumbnails", {"out": work / "a.html"}),
        ("HTML, no thumbnails", {"out": work / "b.html", "thumbnails": False}),
        ("PNG only", {"out": None, "png": work / "c.png"}),
    ):
        with timed() as t:
            result = prediction_map(preds, progress=False, overwrite=True, **kwargs)
        written = result.html or result.png
        size = f"{written.stat().st_size / 1e6:.2f}"
        rows.append([label, result.n_tiles, f"{t.seconds:.2f}", size, f"{t.foreign:.0%}"])
    print(f"\nprediction_map, {args.grid} x {args.grid} real NAIP GeoTIFF tiles\n")
    print(markdown_table(["output", "tiles", "seconds", "MB", "foreign CPU"], rows))

    with timed() as t:
        out = build_report(bundle, work / "report.html", overwrite=True)
    print(f"\nbuild_report of the bundle: {t.seconds:.2f} s, {out.stat().st_size / 1e3:.0f} kB "
          f"(foreign CPU {t.foreign:.0%}); work files in {work}")  # fmt: skip


if __name__ == "__main__":
    main()

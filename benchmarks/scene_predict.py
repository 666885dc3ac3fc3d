"""Whole-scene classification benchmark: throughput and peak memory of ``predict --tile-size``.

Scores every ``--tile-size`` window of synthetic scenes of ``--sizes`` pixels a side with
:func:`landsight.classify.scene.predict_scene` (table output to a temporary ``.parquet``, no
MLflow), each run in a fresh subprocess whose peak resident memory (``VmHWM``) is read at the end.

The scenes are synthetic: the real downsampled Chesapeake NAIP scene
(``chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif``, 260 x 260 px, 4 bands) tiled
and mirrored (every other copy flipped, so edges meet) to ``size x size`` pixels, given 1 m pixels
in EPSG:26917 (NAIP's ground sampling distance; the km² below assume it), and written as tiled
(256 px), deflate-compressed 4-band uint8 GeoTIFFs, window by window. The bundle (an RGB model,
bands 1-3 read) is trained first on the package's EuroSAT sample with the ``FAST`` preset, as the
test suite's bundle is, unless ``--bundle`` names one.

Run from the repository root:
``.venv/bin/python benchmarks/scene_predict.py`` (``--sizes 2000 10000 --tile-size 256``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from _common import DATA, machine, markdown_table, timed

NAIP = DATA / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1_naip-new.tif"

_MEASURE = textwrap.dedent(
    """
    import json, re, sys, time
    from landsight.classify.scene import predict_scene
    t = time.perf_counter()
    df = predict_scene(sys.argv[1], sys.argv[2], tile_size=int(sys.argv[3]), out=sys.argv[4], progress=False,
                       track=False)
    seconds = time.perf_counter() - t
    hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    print(json.dumps({"seconds": seconds, "peak_mb": int(hwm) / 1024, "windows": len(df),
                      "errors": int((df["error"] != "").sum())}))
    """
)


def mirrored_scene(path: Path, size: int, source: Path = NAIP) -> Path:
    """A synthetic ``size``² GeoTIFF made by tiling and mirroring the real NAIP scene (see the module doc)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        base = src.read()  # (4, 260, 260)
    _, h, w = base.shape
    row_tile = np.concatenate([base, base[:, ::-1, :]], axis=1)  # 2h tall: copy, then flipped upside down
    strip_h = 1024
    profile = {"driver": "GTiff", "height": size, "width": size, "count": base.shape[0], "dtype": "uint8",
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER",
               "crs": "EPSG:26917", "transform": from_origin(600000, 4400000, 1.0, 1.0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, strip_h):
            rows = np.arange(r0, min(size, r0 + strip_h)) % (2 * h)
            strip = row_tile[:, rows, :]
            pair = np.concatenate([strip, strip[:, :, ::-1]], axis=2)  # 2w wide: copy, then flipped left-right
            cols = np.arange(size) % (2 * w)
            dst.write(pair[:, :, cols], window=Window(0, r0, size, len(rows)))
    return path


def train_bundle(work: Path) -> Path:
    from landsight.classify.train import FAST, train
    from landsight.data.sample import eurosat_sample

    return train(eurosat_sample(), out=work / "bench.landsight", test_size=0.25, progress=False, track=False,
                 **FAST).bundle_path  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="landsight-scene-bench-") as folder:
        work = Path(folder)
        bundle = args.bundle or train_bundle(work)
        for size in args.sizes:
            raster = mirrored_scene(work / f"synthetic_{size}.tif", size)
            out = work / f"preds_{size}.parquet"
            with timed() as t:
                done = subprocess.run([sys.executable, "-c", _MEASURE, str(bundle), str(raster), str(args.tile_size),
                                       str(out)], capture_output=True, text=True, check=False)  # fmt: skip
            if done.returncode:
                sys.exit(f"size {size}: the measuring process failed\n{done.stderr[-3000:]}")
            m = json.loads(done.stdout.strip().splitlines()[-1])
            km2 = size * size / 1e6
            rows.append([f"{size:,} x {size:,} (synthetic, mirrored NAIP)", f"{km2:g}", f"{m['windows']:,}",
                         f"{m['seconds']:.1f}", f"{km2 / m['seconds'] * 60:.2f}", f"{m['windows'] / m['seconds']:.1f}",
                         f"{m['peak_mb']:.0f}", f"{size * size * 4 / 2**20:.0f}", f"{t.foreign:.0%}"])  # fmt: skip
            raster.unlink()
    headers = ["scene", "km² (1 m px)", "windows", "seconds", "km²/min", "windows/s", "peak RSS MB",
               "scene decoded MB", "foreign CPU"]  # fmt: skip
    print(f"tile size {args.tile_size} px, stride = tile size, batch 32\n")
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()

"""Regenerate docs/img/map.png and docs/img/report.png from real data (README, "Looking at results").

Chain: train a logreg bundle and fine-tune a `last`-layer model on 20 real EuroSAT tiles per
class (5 classes) from ../shared/data; cut an 8 x 8 grid of GeoTIFF tiles from the real NAIP tile
../shared/data/chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif, with the majority
Chesapeake land-cover class of each as the reference label; predict them; map them; write the
report of the fine-tuning run; screenshot both with headless chromium. About a minute on 2 cores.

    .venv/bin/python docs/make_screenshots.py [--work /tmp/landsight-docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LANDSIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
CLASSES = ("AnnualCrop", "Forest", "Pasture", "Residential", "SeaLake")
#: Chesapeake land-cover codes named in the EuroSAT vocabulary where one fits (README of the data).
LC_NAMES = {1: "SeaLake", 2: "Forest", 3: "Pasture", 4: "barren", 5: "Residential", 6: "Residential"}
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip


def cut_tiles(out: Path, n: int = 8) -> Path:
    """Cut an n x n grid of GeoTIFF tiles; write reference.csv (path,label)."""
    import pandas as pd
    import rasterio

    from landsight.data.tiling import cut_tiles

    rows = []
    tile = DATA / "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"
    with rasterio.open(str(tile).replace("naip-new", "lc")) as lc:
        for t in cut_tiles(tile, out, size=lc.width // n, overwrite=True):
            codes, counts = np.unique(lc.read(1, window=t.window), return_counts=True)
            rows.append((str(t.path), LC_NAMES.get(int(codes[counts.argmax()]), "other")))
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(out / "reference.csv", index=False)
    return out / "reference.csv"


def screenshot(html: Path, png: Path, size: str, profile: Path) -> None:
    """Screenshot a page with headless chromium."""
    cmd = ["chromium", *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           f"--screenshot={png}", f"--window-size={size}", html.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main() -> None:
    """Run the chain and write the two screenshots."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="landsight-docs-")))
    args = parser.parse_args()
    work: Path = args.work
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlruns.db'}")

    from landsight.classify.finetune import finetune
    from landsight.classify.predict import predict
    from landsight.classify.train import train
    from landsight.results.maps import prediction_map
    from landsight.results.report import build_report

    euro = work / "eurosat"
    for cls in CLASSES:
        (euro / cls).mkdir(parents=True, exist_ok=True)
        for i in range(1, 21):
            shutil.copy(DATA / "eurosat_rgb" / cls / f"{cls}_{i}.jpg", euro / cls)
    bundle = train(euro, out=work / "eurosat.landsight", test_size=0.25, progress=False, overwrite=True).bundle_path
    reference = cut_tiles(work / "tiles")
    preds = predict(bundle, work / "tiles", out=work / "preds.parquet", progress=False, overwrite=True)
    title = "EuroSAT logreg on NAIP 2014, m_3907833_nw (8 x 8 tiles)"
    prediction_map(preds, work / "map.html", reference=reference, title=title, progress=False, overwrite=True)
    run = finetune(euro, out=work / "ft.landsight", retrain="last", epochs=6, batch_size=16, lr=0.05,
                   progress=False, overwrite=True)  # fmt: skip
    build_report(run.run_id, work / "report.html", overwrite=True)

    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    screenshot(work / "map.html", img / "map.png", "1200,800", work / "chromium")
    screenshot(work / "report.html", img / "report.png", "1100,1560", work / "chromium")
    print(f"wrote {img / 'map.png'} and {img / 'report.png'} (work files in {work})")


if __name__ == "__main__":
    main()

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landsight.bundle import load_bundle
from landsight.classify.bundle import Bundle
from landsight.classify.predict import predict
from landsight.errors import LandsightValueError


@pytest.fixture()
def folder(small_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "new_tiles"
    root.mkdir()
    for i, f in enumerate(sorted(small_dataset.rglob("*.jpg"))[::3]):
        shutil.copy(f, root / f"tile_{i:02d}.jpg")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predict_writes_a_row_per_image_with_errors(trained, folder: Path, tmp_path: Path, suffix: str) -> None:  # noqa: ANN001
    out = tmp_path / f"preds{suffix}"
    df = predict(trained.bundle_path, folder, out=out, progress=False)
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out, keep_default_na=False)
    assert len(df) == len(back) == 13
    classes = load_bundle(trained.bundle_path).classes
    assert list(df.columns[:3]) == ["path", "predicted", "confidence"]
    assert {f"prob_{c}" for c in classes} <= set(df.columns) and {"error", "minx", "crs"} <= set(df.columns)
    bad = df[df["path"].str.endswith("corrupt.jpg")].iloc[0]
    assert bad["error"] and bad["predicted"] == ""
    good = df[df["error"] == ""]
    assert len(good) == 12 and set(good["predicted"]) <= set(classes)
    np.testing.assert_allclose(good[[f"prob_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-5)


def test_rerun_after_a_crash_scores_only_the_rest(trained, folder: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "preds.parquet"
    calls: list[int] = []
    real = Bundle.predict

    def crash_on_third_chunk(self, paths, **kw):  # noqa: ANN001, ANN202
        calls.append(len(paths))
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(self, paths, **kw)

    monkeypatch.setattr(Bundle, "predict", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict(trained.bundle_path, folder, out=out, chunk_size=4, progress=False)
    assert not out.exists() and len(list((tmp_path / "preds.parquet.parts").glob("part-*"))) == 2
    calls.clear()
    monkeypatch.setattr(
        Bundle, "predict", lambda self, paths, **kw: (calls.append(len(paths)), real(self, paths, **kw))[1]
    )
    df = predict(trained.bundle_path, folder, out=out, chunk_size=4, progress=False)
    assert sum(calls) == 13 - 8 + 1  # the images not scored before the crash, and corrupt.jpg's error row again
    assert len(df) == 13 and df["path"].is_unique
    assert not (tmp_path / "preds.parquet.parts").exists()
    calls.clear()
    predict(trained.bundle_path, folder, out=out, progress=False)
    assert calls == [1]  # everything done: only the error row (corrupt.jpg) is tried again


def test_georeferenced_tiles_keep_bounds_and_crs(trained, shared_data: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import rasterio
    from rasterio.windows import Window

    src_path = shared_data / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1_naip-new.tif"
    with rasterio.open(src_path) as src:
        window = Window(0, 0, 64, 64)
        profile = src.profile | {"width": 64, "height": 64, "transform": src.window_transform(window)}
        data, expected_bounds = src.read(window=window), src.window_bounds(window)
    chip = tmp_path / "chip.tif"
    with rasterio.open(chip, "w", **profile) as dst:
        dst.write(data)
    row = predict(trained.bundle_path, chip, progress=False).iloc[0]
    assert row["error"] == "" and row["crs"] == "EPSG:26917"
    assert (row["minx"], row["miny"], row["maxx"], row["maxy"]) == pytest.approx(expected_bounds)


def test_unsupported_output_format(trained, folder: Path, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(LandsightValueError, match=r"\.parquet"):
        predict(trained.bundle_path, folder, out=tmp_path / "p.xlsx")

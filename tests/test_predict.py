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


def _synthetic_float64_tiff(path: Path, size: int = 1024) -> Path:
    """A synthetic deflate-compressed constant float64 TIFF: a few KB on disk, ``size``² x 8 bytes decoded."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "float64",
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.full((1, size, size), 7.0))
    return path


def test_predict_skips_images_over_the_decode_limit(trained, folder: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A file whose header promises more decoding memory than ``max_decode_bytes`` gets an error row, unread."""
    from landsight.data import readers
    from landsight.data.readers import DEFAULT_MAX_DECODE_BYTES, peek_image

    bomb = _synthetic_float64_tiff(folder / "synthetic_big_float64.tif")
    header = peek_image(bomb.read_bytes(), bomb.name)
    assert header is not None and bomb.stat().st_size < 100_000 and header.decode_bytes > 20_000_000
    decoded: list[str] = []
    real = readers._decode_rasterio

    def spy(data, name, bands, max_decode_bytes):  # noqa: ANN001, ANN202
        out = real(data, name, bands, max_decode_bytes)  # raises before reading pixels when over the limit
        decoded.append(name)
        return out

    monkeypatch.setattr(readers, "_decode_rasterio", spy)
    out = tmp_path / "preds.parquet"
    limit = 10_000_000  # far above a 64 x 64 JPEG (36,864 bytes), below the TIFF's estimate
    df = predict(trained.bundle_path, folder, out=out, progress=False, track=False, max_decode_bytes=limit)
    assert len(df) == 14 and len(pd.read_parquet(out)) == 14
    row = df[df["path"].str.endswith("synthetic_big_float64.tif")].iloc[0]
    assert row["predicted"] == "" and row["error"].startswith("too large to decode")
    assert f"{header.decode_bytes} bytes" in row["error"] and f"limit of {limit} bytes" in row["error"]
    assert not decoded  # refused from the header: no pixel of it was decoded
    assert (df["error"] == "").sum() == 12  # the 12 real tiles are scored; corrupt.jpg has its own error
    # the default limit (512 MiB) admits it; None turns the limit off
    assert DEFAULT_MAX_DECODE_BYTES == 512 * 1024**2
    row = predict(trained.bundle_path, bomb, progress=False, track=False).iloc[0]
    assert row["error"] == "" and row["predicted"] and decoded == [str(bomb)]
    with pytest.raises(LandsightValueError, match="max_decode_bytes"):
        predict(trained.bundle_path, folder, progress=False, track=False, max_decode_bytes=0)

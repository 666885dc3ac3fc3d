"""Tests of landsight.data.readers on real EuroSAT, UC Merced and NAIP imagery."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landsight.data.readers import IMAGE_EXTENSIONS, RasterImage, decode_image, read_image
from landsight.errors import DataNotFoundError, ImageReadError, LandsightValueError

EUROSAT = "eurosat_rgb/Forest/Forest_1.jpg"
UCMERCED = "ucmerced/forest/forest00.tif"
NAIP_PATCH = "chesapeake/train/images/wv_1m_2014-m_3708020_sw_17_1-0.tif"
NAIP_TILE = "chesapeake/tile_downsampled/m_3907833_nw_17_1_naip-new.tif"

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def rgb(shared_data: Path) -> Image.Image:
    """A real UC Merced tile (256x256 RGB) as a PIL image."""
    with Image.open(shared_data / UCMERCED) as img:
        return img.convert("RGB")


def _png_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("relpath", "bands", "shape"),
    [
        (EUROSAT, None, (64, 64, 3)),
        (UCMERCED, None, (256, 256, 3)),
        (NAIP_PATCH, None, (256, 256, 3)),
        (NAIP_PATCH, (1, 2, 3, 4), (256, 256, 4)),
        (NAIP_PATCH, (4,), (256, 256, 1)),
        (NAIP_TILE, (1, 2, 3, 4), (260, 260, 4)),
    ],
)
def test_read_real_images(
    shared_data: Path, relpath: str, bands: tuple[int, ...] | None, shape: tuple[int, ...]
) -> None:
    image = read_image(shared_data / relpath, bands=bands)
    assert isinstance(image, RasterImage)
    assert image.array.shape == shape
    assert image.array.dtype == np.uint8
    assert image.array.std() > 0


def test_naip_band_order_matches_rasterio(shared_data: Path) -> None:
    import rasterio

    with rasterio.open(shared_data / NAIP_PATCH) as src:
        expected = src.read()  # (4, H, W)
    image = read_image(shared_data / NAIP_PATCH, bands=(4, 1))
    np.testing.assert_array_equal(image.array[..., 0], expected[3])
    np.testing.assert_array_equal(image.array[..., 1], expected[0])
    np.testing.assert_array_equal(read_image(shared_data / NAIP_PATCH).array[..., 2], expected[2])


def test_georeference_kept_only_when_present(shared_data: Path) -> None:
    tile = read_image(shared_data / NAIP_TILE)
    assert tile.crs == "EPSG:26917"
    assert tile.bounds is not None
    left, bottom, right, top = tile.bounds
    assert left < right and bottom < top
    patch = read_image(shared_data / NAIP_PATCH)
    assert patch.bounds is None and patch.crs is None


def test_png_matches_jpeg_pixels(shared_data: Path, tmp_path: Path) -> None:
    jpeg = read_image(shared_data / EUROSAT).array
    png = tmp_path / "forest.png"
    Image.fromarray(jpeg).save(png)
    np.testing.assert_array_equal(read_image(png).array, jpeg)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_mode_conversions_give_rgb(rgb: Image.Image, mode: str) -> None:
    img = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    array = decode_image(buf.getvalue(), f"x.{fmt.lower()}").array
    assert array.shape == (256, 256, 3) and array.dtype == np.uint8
    if mode in {"L", "LA", "1"}:
        assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    if mode == "RGBA":
        np.testing.assert_array_equal(array, np.asarray(rgb))
    if mode in {"P", "CMYK"}:
        diff = np.abs(array.astype(int) - np.asarray(rgb).astype(int)).mean()
        assert diff < 20


def test_rgba_band_four_is_alpha(rgb: Image.Image) -> None:
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    array = decode_image(_png_bytes(rgba), "a.png", bands=(1, 2, 3, 4)).array
    assert array.shape == (256, 256, 4)
    assert (array[..., 3] == 128).all()


def test_sixteen_bit_png_is_stretched(rgb: Image.Image) -> None:
    gray = np.asarray(rgb.convert("L")).astype(np.uint16) * 200 + 1000
    data = _png_bytes(Image.fromarray(gray))
    array = decode_image(data, "deep.png").array
    assert array.dtype == np.uint8 and array.shape == (256, 256, 3)
    assert array.min() == 0 and array.max() == 255
    # a monotonic stretch keeps the ordering of pixel values
    order = np.argsort(gray.ravel(), kind="stable")
    assert (np.diff(array[..., 0].ravel()[order].astype(int)) >= 0).all()


def test_sixteen_bit_and_float_tiff_are_stretched(shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    with rasterio.open(shared_data / NAIP_PATCH) as src:
        data = src.read().astype(np.float32) * 3.5
        profile = src.profile
    for dtype in ("uint16", "float32"):
        path = tmp_path / f"{dtype}.tif"
        profile.update(dtype=dtype)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data.astype(dtype))
        array = read_image(path, bands=(1, 2, 3, 4)).array
        assert array.dtype == np.uint8 and array.shape == (256, 256, 4)
        assert array.min() == 0 and array.max() == 255


def test_constant_band_becomes_zeros(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 3000, dtype=np.uint16)).save(path)
    assert not read_image(path).array.any()


def test_exif_orientation_is_applied(shared_data: Path, tmp_path: Path) -> None:
    with Image.open(shared_data / UCMERCED) as img:
        wide = img.convert("RGB").crop((0, 0, 200, 100))  # 200 wide, 100 high
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif.tobytes())
    assert read_image(path).array.shape == (200, 100, 3)


def test_tiff_rasterio_failure_falls_back_to_pil(rgb: Image.Image) -> None:
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, format="TIFF")
    array = decode_image(buf.getvalue(), "cmyk.tif").array
    assert array.shape == (256, 256, 3)


def _truncated(shared_data: Path) -> bytes:
    data = (shared_data / UCMERCED).read_bytes()
    return data[: len(data) // 2]


def _truncated_jpeg(shared_data: Path) -> bytes:
    data = (shared_data / EUROSAT).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: b"", "zero-byte file"),
        (lambda d: b"this is a text file, renamed .jpg\n", "not an image (unidentified format)"),
        (_truncated_jpeg, "truncated or corrupt:"),
        (_truncated, "truncated or corrupt:"),
    ],
    ids=["zero-byte", "text-renamed-jpg", "truncated-jpeg", "truncated-tiff"],
)
def test_bad_files_raise_image_read_error(shared_data: Path, tmp_path: Path, make: object, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(make(shared_data))  # type: ignore[operator]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.reason.startswith(reason)
    assert info.value.path == str(path)
    assert isinstance(info.value, OSError)


def test_decompression_bomb(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for relpath in (EUROSAT, NAIP_PATCH):
        with pytest.raises(ImageReadError, match="decompression bomb"):
            read_image(shared_data / relpath)


def test_band_out_of_range_names_band_count(shared_data: Path) -> None:
    with pytest.raises(ImageReadError, match=r"has 4 band\(s\)"):
        read_image(shared_data / NAIP_PATCH, bands=(1, 5))
    with pytest.raises(ImageReadError, match=r"has 3 band\(s\)"):
        read_image(shared_data / EUROSAT, bands=(4,))


@pytest.mark.parametrize("bands", [(), (0, 1), 3, ("1",), (True,)])
def test_invalid_bands_parameter(shared_data: Path, bands: object) -> None:
    with pytest.raises(LandsightValueError, match="bands"):
        read_image(shared_data / EUROSAT, bands=bands)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


def test_image_extensions() -> None:
    assert {".jpg", ".tif", ".png", ".webp"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_import_is_light() -> None:
    code = (
        "import sys, landsight.data.readers; "
        "print(sorted(m for m in ('rasterio', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Bounded resources (issue 15): decoding budgets in the scoring service, zip-bomb limits.

Real images come from the package's EuroSAT sample; the bombs are synthetic and named so: deflate
TIFFs whose few hundred KB inflate to hundreds of MB (a constant raster written tile by tile, so
making them is fast and small), and zips of one highly compressible member or of many members.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from landsight.data.archive import safe_extract
from landsight.data.catalog import build_catalog
from landsight.data.readers import ImageHeader, decode_image, peek_image, read_image
from landsight.data.sample import eurosat_sample
from landsight.errors import ImageReadError, ImageTooLargeError, LandsightValueError, ResourceLimitError

JPEG_PATH = eurosat_sample() / "Forest" / "Forest_1.jpg"
JPEG = JPEG_PATH.read_bytes()


def _synthetic_tiff(path: Path, dtype: str, size: int, count: int = 1, block: int = 512) -> Path:
    """A synthetic deflate-compressed constant GeoTIFF-less raster, written one tile at a time."""
    import rasterio
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": count, "dtype": dtype,
        "compress": "deflate", "tiled": True, "blockxsize": block, "blockysize": block,
    }  # fmt: skip
    tile = np.full((count, block, block), 7, dtype=dtype)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                dst.write(tile[:, :h, :w], window=Window(col, row, w, h))
    return path


@pytest.fixture(scope="module")
def tiff_bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic TIFF bombs Pillow cannot open (4-band uint16, float64) and a small float32 TIFF."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    root = tmp_path_factory.mktemp("bombs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return {
            # 4000 x 4000 x 4 uint16 (like a NAIP tile): 128 MB of samples in ~200 KB.
            "uint16": _synthetic_tiff(root / "bomb_uint16.tif", "uint16", 4000, count=4),
            # 4000 x 4000 float64: 128 MB of samples in ~220 KB; the old code peaked at 766 MB decoding it.
            "float64": _synthetic_tiff(root / "bomb_float64.tif", "float64", 4000),
            "small_float32": _synthetic_tiff(root / "small_float32.tif", "float32", 64, block=16),
        }


# -- readers: the header, read alone; the budget in the decoder ---------------------------------


def test_peek_image_reads_headers_without_decoding(tiff_bombs: dict[str, Path]) -> None:
    uint16 = peek_image(tiff_bombs["uint16"].read_bytes(), "bomb_uint16.tif")
    assert uint16 == ImageHeader(4000, 4000, 4, 2, "uint16", "rasterio")
    float64 = peek_image(tiff_bombs["float64"].read_bytes(), "bomb_float64.tif")
    assert float64 == ImageHeader(4000, 4000, 1, 8, "float64", "rasterio")
    assert float64.raw_bytes == 128_000_000
    assert float64.decode_bytes == 2 * 128_000_000 + 20 * 16_000_000  # buffer + array + stretch
    jpeg = peek_image(JPEG, "Forest_1.jpg")
    assert jpeg == ImageHeader(64, 64, 3, 1, "uint8", "pillow")
    assert jpeg.decode_bytes == 64 * 64 * 9
    assert peek_image(b"text, not an image", "x.png") is None  # decode_image gives the reason
    with pytest.raises(ImageReadError, match="decompression bomb"):
        peek_image(_png_header_only(100_000, 100_000), "bomb.png")


def test_decode_budget_applies_to_every_decoder(tiff_bombs: dict[str, Path]) -> None:
    # rasterio path (uint16, float64): refused before reading a pixel
    for name in ("uint16", "float64"):
        with pytest.raises(ImageTooLargeError, match="max_decode_bytes") as info:
            read_image(tiff_bombs[name], max_decode_bytes=100_000_000)
        assert isinstance(info.value, ImageReadError) and isinstance(info.value, ResourceLimitError)
        assert str(tiff_bombs[name]) in str(info.value)
    # Pillow path (JPEG) and the default (no byte budget) are unchanged for real images
    with pytest.raises(ImageTooLargeError, match="too large to decode"):
        decode_image(JPEG, "Forest_1.jpg", max_decode_bytes=1000)
    np.testing.assert_array_equal(
        decode_image(JPEG, "Forest_1.jpg", max_decode_bytes=10**6).array, read_image(JPEG_PATH).array
    )
    small = read_image(tiff_bombs["small_float32"], max_decode_bytes=10**6).array
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8


def _png_header_only(width: int, height: int) -> bytes:
    """A synthetic PNG whose header claims width x height pixels, with almost no pixel data."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# -- the scoring service -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_path(trained) -> Path:  # noqa: ANN001
    return trained.bundle_path


@pytest.fixture(scope="module")
def client(bundle_path: Path) -> Iterator[object]:
    """An in-process client of the app with the default limits (max_decode_bytes = 512 MiB)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    with TestClient(create_app(bundle_path, ServeSettings())) as c:
        yield c


def test_max_decode_bytes_setting() -> None:
    from landsight.serve.settings import ServeSettings

    assert ServeSettings().max_decode_bytes == 512 * 1024**2
    settings = ServeSettings.from_env({"LANDSIGHT_SERVE_MAX_DECODE_BYTES": "1000"})
    assert settings.max_decode_bytes == 1000
    assert settings.to_env()["LANDSIGHT_SERVE_MAX_DECODE_BYTES"] == "1000"
    with pytest.raises(LandsightValueError, match="max_decode_bytes"):
        ServeSettings.from_env({"LANDSIGHT_SERVE_MAX_DECODE_BYTES": "0"})


def test_tiff_bombs_answer_413_and_serving_continues(client, tiff_bombs: dict[str, Path]) -> None:  # noqa: ANN001
    for name in ("uint16", "float64"):
        data = tiff_bombs[name].read_bytes()
        assert len(data) < 1_000_000  # far under the body limit: only the header check stops it
        raw = client.post("/predict", content=data, headers={"content-type": "image/tiff"})
        assert raw.status_code == 413, raw.text
        body = raw.json()
        assert body["error"] == "image_too_large"
        assert "4000x4000" in body["detail"] and "max_decode_bytes" in body["detail"]
        assert "LANDSIGHT_SERVE_MAX_DECODE_BYTES" in body["detail"]
        multipart = client.post("/predict", files={"file": (f"{name}.tif", data, "image/tiff")})
        assert multipart.status_code == 413 and f"{name}.tif" in multipart.json()["detail"]
        ok = client.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"})
        assert ok.status_code == 200, ok.text
    # in a batch, the bombs get an error item and the real image its prediction
    files = [("files", ("Forest_1.jpg", JPEG, "image/jpeg"))] + [
        ("files", (f"{n}.tif", tiff_bombs[n].read_bytes(), "image/tiff")) for n in ("uint16", "float64")
    ]
    batch = client.post("/predict/batch", files=files)
    assert batch.status_code == 200, batch.text
    items = batch.json()["items"]
    assert items[0]["prediction"]["label"] and batch.json()["n_failed"] == 2
    assert all("max_decode_bytes" in item["error"] for item in items[1:])
    # OIP v2 BYTES input: the same check
    name = client.get("/metadata").json()["model"]
    payload = {
        "inputs": [
            {
                "name": "image",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(tiff_bombs["float64"].read_bytes()).decode()],
            }
        ]
    }
    v2 = client.post(f"/v2/models/{name}/infer", json=payload)
    assert v2.status_code == 413 and "max_decode_bytes" in v2.json()["detail"], v2.text


def test_small_budget_from_settings(bundle_path: Path) -> None:
    """A budget below a real 64 x 64 JPEG's needs refuses it; the v2 UINT8 tensor is bounded by it too."""
    from fastapi.testclient import TestClient

    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    settings = ServeSettings.from_env({"LANDSIGHT_SERVE_MAX_DECODE_BYTES": str(64 * 64 * 9 - 1)}, batching=False)
    with TestClient(create_app(bundle_path, settings)) as c:
        r = c.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and "max_decode_bytes" in r.json()["detail"], r.text
        name = c.get("/metadata").json()["model"]
        h, w, ch = 200, 200, 3  # 120,000 values x 9 bytes > 36,863: refused from the shape alone
        tensor = {"name": "image", "shape": [1, h, w, ch], "datatype": "UINT8", "data": [0]}
        v2 = c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 413 and v2.json()["error"] == "image_too_large", v2.text
        assert "max_decode_bytes" in v2.json()["detail"]
        assert c.get("/health/ready").status_code == 200


_RSS_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from fastapi.testclient import TestClient
from landsight.serve.app import create_app
from landsight.serve.settings import ServeSettings

bundle, jpeg, small_tiff, *bombs = sys.argv[1:]
def peak():
    # Linux: VmHWM, this process image's peak RSS (ru_maxrss would carry the parent's peak across
    # fork + exec: the pytest process's); elsewhere ru_maxrss (bytes on macOS, KiB on others).
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
def post(path, ctype):
    return client.post("/predict", content=Path(path).read_bytes(), headers={"content-type": ctype}).status_code
out = {}
with TestClient(create_app(bundle, ServeSettings(batching=False))) as client:
    out["warm"] = [post(jpeg, "image/jpeg"), post(small_tiff, "image/tiff")]  # GDAL loaded before measuring
    out["before"] = peak()
    out["bombs"] = [post(b, "image/tiff") for b in bombs]
    out["after_bombs"] = post(jpeg, "image/jpeg")
    out["peak"] = peak()
print(json.dumps(out))
"""


def test_tiff_bombs_peak_rss_stays_small(bundle_path: Path, tiff_bombs: dict[str, Path]) -> None:
    """In a fresh process (the peak RSS is a lifetime peak), the bombs add little to it.

    Before the header check covered rasterio's TIFFs, decoding the float64 bomb alone added
    about 766 MB and the uint16 one about 500 MB.
    """
    pytest.importorskip("fastapi")
    args = [str(bundle_path), str(JPEG_PATH), str(tiff_bombs["small_float32"])]
    args += [str(tiff_bombs["uint16"]), str(tiff_bombs["float64"])]
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["warm"] == [200, 200] and out["bombs"] == [413, 413] and out["after_bombs"] == 200
    growth_mb = (out["peak"] - out["before"]) / 1e6
    print(f"peak RSS {out['before'] / 1e6:.0f} MB before the bombs, +{growth_mb:.1f} MB after")
    assert growth_mb < 100, out


# -- zip extraction limits -----------------------------------------------------------------------


def _zip_bomb(path: Path, mib: int = 300) -> Path:
    """A synthetic zip bomb: one member of ``mib`` MiB of zeros, deflated while streamed in chunks."""
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("Forest/bomb.tif", "w") as out:
        for _ in range(mib):
            out.write(chunk)
    return path


def _real_zip(path: Path, extra: int = 0) -> Path:
    """A zip of real EuroSAT tiles in two class folders (plus ``extra`` tiny synthetic members)."""
    with zipfile.ZipFile(path, "w") as zf:
        for cls in ("Forest", "River"):
            for n in (1, 2, 3):
                zf.write(eurosat_sample() / cls / f"{cls}_{n}.jpg", f"{cls}/{cls}_{n}.jpg")
        for i in range(extra):
            zf.writestr(f"__MACOSX/._note_{i}", f"synthetic member {i}\n")  # ignored by catalogs
    return path


def _left_behind(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part-" in p.name or p.name == "out"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LANDSIGHT_CACHE_DIR", str(root))
    for var in ("LANDSIGHT_ZIP_MAX_BYTES", "LANDSIGHT_ZIP_MAX_RATIO", "LANDSIGHT_ZIP_MAX_MEMBERS"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_zip_bomb_is_refused_before_writing(tmp_path: Path, cache: Path) -> None:
    archive = _zip_bomb(tmp_path / "bomb.zip")
    assert archive.stat().st_size < 1_000_000  # ~300 KB inflating to 300 MiB
    with pytest.raises(ResourceLimitError, match="max_ratio") as info:
        safe_extract(archive, tmp_path / "out")
    message = str(info.value)
    assert str(archive) in message and "Forest/bomb.tif" in message and "LANDSIGHT_ZIP_MAX_RATIO" in message
    assert not _left_behind(tmp_path)
    with pytest.raises(ResourceLimitError):
        build_catalog(archive)  # into the cache
    assert not [p for p in cache.rglob("*") if p.is_file()]  # nothing extracted, nothing left


def test_zip_size_and_member_limits(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _real_zip(tmp_path / "real.zip", extra=50)
    with pytest.raises(ResourceLimitError, match="56 members, over the limit of 20") as info:
        safe_extract(archive, tmp_path / "out", max_members=20)
    assert "max_members=56" in str(info.value) and "LANDSIGHT_ZIP_MAX_MEMBERS=56" in str(info.value)
    with pytest.raises(ResourceLimitError, match="over the limit of 1000 bytes"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    assert not _left_behind(tmp_path)
    monkeypatch.setenv("LANDSIGHT_ZIP_MAX_MEMBERS", "20")
    with pytest.raises(ResourceLimitError, match="max_members"):
        build_catalog(archive)
    monkeypatch.setenv("LANDSIGHT_ZIP_MAX_MEMBERS", "lots")
    with pytest.raises(LandsightValueError, match="LANDSIGHT_ZIP_MAX_MEMBERS='lots'"):
        safe_extract(archive, tmp_path / "out")
    monkeypatch.delenv("LANDSIGHT_ZIP_MAX_MEMBERS")
    catalog = build_catalog(archive)  # within the default limits: a normal catalog
    assert sorted(catalog.label.unique()) == ["Forest", "River"] and len(catalog) == 6
    read_image(catalog.path.iloc[0])


def test_zip_lying_header_is_stopped_and_cleaned_up(tmp_path: Path) -> None:
    """A synthetic zip whose headers declare 1000 bytes for a 20 MiB member."""
    archive = _zip_bomb(tmp_path / "liar.zip", mib=20)
    raw = bytearray(archive.read_bytes())
    real = 20 * 1024 * 1024
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = raw.find(sig)
        assert struct.unpack_from("<I", raw, at + offset)[0] == real
        struct.pack_into("<I", raw, at + offset, 1000)
    archive.write_bytes(bytes(raw))
    with pytest.raises((ResourceLimitError, LandsightValueError), match=str(archive)):
        safe_extract(archive, tmp_path / "out")
    assert not _left_behind(tmp_path)


def test_cache_keeps_recent_extractions(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from landsight.cache import cache_dir

    monkeypatch.setenv("LANDSIGHT_ZIP_KEEP_EXTRACTIONS", "2")
    folders = []
    for i in range(4):
        folders.append(safe_extract(_real_zip(tmp_path / f"z{i}.zip", extra=i + 1), cache_dir("extracted") / f"z{i}"))
    assert safe_extract(tmp_path / "z2.zip", folders[2]) == folders[2]  # reused, marked most recent
    safe_extract(_real_zip(tmp_path / "z4.zip", extra=9), cache_dir("extracted") / "z4")
    assert sorted(p.name for p in cache_dir("extracted").iterdir()) == ["z2", "z4"]
    # outside the cache nothing is pruned: the user's extractions are theirs
    mine = [safe_extract(tmp_path / f"z{i}.zip", tmp_path / "mine" / f"z{i}") for i in range(4)]
    assert all(p.is_dir() for p in mine)


def test_zipped_bundle_obeys_zip_limits(
    bundle_path: Path, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from landsight.bundle import load_bundle

    archive = Path(shutil.make_archive(str(tmp_path / "model"), "zip", bundle_path.parent, bundle_path.name))
    monkeypatch.setenv("LANDSIGHT_ZIP_MAX_BYTES", "1000")
    with pytest.raises(ResourceLimitError, match="max_bytes"):
        load_bundle(archive)
    monkeypatch.delenv("LANDSIGHT_ZIP_MAX_BYTES")
    assert not [p for p in cache.rglob("*") if p.is_file()]
    assert load_bundle(archive).classes == load_bundle(bundle_path).classes


# -- the process-wide decoding budget --------------------------------------------------------------


def test_decode_budget_counts_bytes_across_threads() -> None:
    import threading

    from landsight.serve.budget import DecodeBudget

    budget = DecodeBudget(1000)
    assert budget.acquire(600, timeout=0) and not budget.acquire(600, timeout=0.05)  # does not fit: waits, refuses
    assert not budget.acquire(1001, timeout=10)  # never fits: refused at once
    assert budget.in_use == 600 and budget.refused == 2
    threading.Timer(0.1, budget.release, args=(600,)).start()
    assert budget.acquire(600, timeout=10)  # fits once the first is released
    budget.release(600)
    with pytest.raises(TimeoutError), budget.hold(700, timeout=0), budget.hold(700, timeout=0):
        pass
    assert budget.in_use == 0 and budget.peak == 700
    with pytest.raises(LandsightValueError):
        DecodeBudget(0)


def test_max_decode_total_bytes_setting() -> None:
    from landsight.serve.settings import ServeSettings

    assert ServeSettings().max_decode_total_bytes == 1024**3 and ServeSettings().decode_wait_s == 5.0
    env = {"LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES": "5000", "LANDSIGHT_SERVE_DECODE_WAIT_S": "0.5"}
    settings = ServeSettings.from_env(env)
    assert (settings.max_decode_total_bytes, settings.decode_wait_s) == (5000, 0.5)
    assert settings.to_env()["LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES"] == "5000"
    with pytest.raises(LandsightValueError, match="max_decode_total_bytes"):
        ServeSettings.from_env({"LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES": "0"})


@pytest.fixture(scope="module")
def float64_tiffs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """8 synthetic 512 x 512 float64 TIFFs (deflate, a few KB each; 9,437,184 bytes estimated to decode)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    root = tmp_path_factory.mktemp("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        paths = [_synthetic_tiff(root / f"synthetic_float64_{i}.tif", "float64", 512, block=256) for i in range(8)]
    return [p.read_bytes() for p in paths]


def _budget_client(bundle_path: Path, estimate: int, wait_s: float):  # noqa: ANN202
    from fastapi.testclient import TestClient

    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    # just above one image's estimate: two at once would not fit
    settings = ServeSettings(max_decode_total_bytes=estimate * 3 // 2, decode_wait_s=wait_s, batching=False)
    return TestClient(create_app(bundle_path, settings))


def _post_all(client, datas: list[bytes]) -> list[object]:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    def post(data: bytes) -> object:
        return client.post("/predict", content=data, headers={"content-type": "image/tiff"})

    with ThreadPoolExecutor(len(datas)) as pool:
        return list(pool.map(post, datas))


def test_concurrent_requests_never_exceed_the_decode_budget(bundle_path: Path, float64_tiffs: list[bytes]) -> None:
    """8 concurrent float64 TIFFs under a budget of 1.5 images decode one at a time, all answered 200."""
    header = peek_image(float64_tiffs[0], "synthetic_float64_0.tif")
    assert header is not None and header.dtype == "float64"
    estimate = header.decode_bytes
    assert estimate == 36 * 512 * 512 and all(len(d) < 200_000 for d in float64_tiffs)
    with _budget_client(bundle_path, estimate, wait_s=60.0) as c:
        budget = c.app.state.service.budget
        answers = _post_all(c, float64_tiffs)
        assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers if r.status_code != 200]
        print(f"decode budget {budget.total} bytes, one image {estimate}: peak in use {budget.peak} bytes")
        assert budget.peak == estimate <= budget.total < 2 * estimate  # never two at once
        assert budget.in_use == 0 and budget.refused == 0


def test_excess_requests_get_503_with_retry_after(
    bundle_path: Path, float64_tiffs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one request holds the budget (a decoder made slow on purpose), the others answer 503 and retry."""
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from landsight.serve import service as service_module

    estimate = 36 * 512 * 512
    release = threading.Event()
    real = service_module.decode_image

    def slow_decode(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        release.wait(30)  # holds its share of the budget until the test lets it go
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "decode_image", slow_decode)
    with _budget_client(bundle_path, estimate, wait_s=0.2) as c:
        budget = c.app.state.service.budget
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(c.post, "/predict", content=d, headers={"content-type": "image/tiff"})
                for d in float64_tiffs
            ]
            busy = []
            for future in as_completed(futures, timeout=60):
                busy.append(future.result())
                if len(busy) == 7:
                    break
            release.set()  # the one holding the budget may now decode
            answers = [f.result(timeout=60) for f in futures]
        codes = sorted(r.status_code for r in answers)
        assert codes == [200] + [503] * 7, [r.text for r in answers]
        for r in (r for r in answers if r.status_code == 503):
            assert r.headers["retry-after"] == "1" and r.json()["error"] == "server_busy"
            assert "max_decode_total_bytes" in r.json()["detail"] and "LANDSIGHT_SERVE_MAX_DECODE_TOTAL_BYTES" in r.text
        assert budget.peak == estimate and budget.refused == 7 and budget.in_use == 0
        # a batch and a v2 BYTES request meet a full budget: 503 for the whole request
        assert budget.acquire(budget.total, timeout=0)
        files = [("files", ("Forest_1.jpg", JPEG, "image/jpeg")), ("files", ("f.tif", float64_tiffs[0], "image/tiff"))]
        batch = c.post("/predict/batch", files=files)
        assert batch.status_code == 503 and batch.headers["retry-after"] == "1", batch.text
        name = c.get("/metadata").json()["model"]
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(JPEG).decode()]}
        v2 = c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 503 and v2.json()["error"] == "server_busy", v2.text
        budget.release(budget.total)
        # healthy afterwards: ready, and the same requests succeed
        assert c.get("/health/ready").status_code == 200
        assert c.post("/predict/batch", files=files).json()["n_ok"] == 2
        assert c.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]}).status_code == 200
        assert [r.status_code for r in _post_all(c, float64_tiffs[:2])] == [200, 200]
        assert budget.in_use == 0 and budget.peak <= budget.total


def test_image_over_the_whole_budget_is_413(bundle_path: Path, float64_tiffs: list[bytes]) -> None:
    from fastapi.testclient import TestClient

    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    settings = ServeSettings(max_decode_total_bytes=1_000_000, batching=False)  # under one TIFF, over a JPEG
    with TestClient(create_app(bundle_path, settings)) as c:
        r = c.post("/predict", content=float64_tiffs[0], headers={"content-type": "image/tiff"})
        assert r.status_code == 413 and "max_decode_total_bytes" in r.json()["detail"], r.text
        assert c.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"}).status_code == 200

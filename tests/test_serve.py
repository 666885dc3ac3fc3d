"""The HTTP scoring service, end to end: a real uvicorn server on a loopback port, real HTTP requests.

Answers are checked against the in-process ``Bundle.predict_proba`` on the same real images (the
package's EuroSAT sample and, when present, UC Merced and NAIP TIFFs from ../shared/data).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from landsight.bundle import load_bundle  # noqa: E402
from landsight.data.readers import decode_image  # noqa: E402
from landsight.data.sample import eurosat_sample  # noqa: E402

LIMITS = {"max_body_bytes": 2_000_000, "max_pixels": 1_000_000, "max_batch_files": 8}
CLASSES = ("Forest", "River", "SeaLake", "Highway")
SAMPLE = [eurosat_sample() / cls / f"{cls}_{n}.jpg" for cls in CLASSES for n in (1, 2)]


def reference(bundle_path: Path, datas: list[bytes]) -> np.ndarray:
    """In-process probabilities: decode, resize, Bundle.predict_proba."""
    bundle = load_bundle(bundle_path)
    stack = np.stack([bundle.preprocessing.resize(decode_image(d, "x").array) for d in datas])
    return bundle.predict_proba(stack)


@pytest.fixture(scope="module")
def bundle_path(trained) -> Path:  # noqa: ANN001
    return trained.bundle_path


@pytest.fixture(scope="module")
def server(bundle_path: Path) -> Iterator[tuple[str, object]]:
    """A real uvicorn server in a thread, on a free loopback port (pre-bound socket: no race)."""
    import uvicorn

    from landsight.serve.app import create_app
    from landsight.serve.settings import ServeSettings

    app = create_app(bundle_path, ServeSettings(**LIMITS, max_batch_size=8, max_wait_ms=5))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(15)
    sock.close()


@pytest.fixture(scope="module")
def base(server: tuple[str, object]) -> str:
    return server[0]


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=30) as c:
        yield c


def model_name(bundle_path: Path) -> str:
    return bundle_path.name.removesuffix(".landsight")


# -- happy paths ---------------------------------------------------------------------------------


def test_health_metadata_openapi(client: httpx.Client, bundle_path: Path) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").json() == {"status": "ready"}
    meta = client.get("/metadata").json()
    bundle = load_bundle(bundle_path)
    assert meta["classes"] == bundle.classes
    assert meta["schema_version"] == bundle.meta["schema_version"] == 1
    assert meta["backbone"]["name"] == bundle.meta["backbone"]["name"]
    assert meta["metrics"] == bundle.meta["metrics"]
    assert meta["model"] == model_name(bundle_path)
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/predict", "/predict/batch", "/metadata", "/health/ready", "/v2/models/{model}/infer"):
        assert path in paths


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_predict_matches_in_process(client: httpx.Client, bundle_path: Path, form: str) -> None:
    datas = [p.read_bytes() for p in SAMPLE]
    expected = reference(bundle_path, datas)
    classes = load_bundle(bundle_path).classes
    for path, data, want in zip(SAMPLE, datas, expected, strict=True):
        if form == "raw":
            r = client.post("/predict", content=data, headers={"content-type": "image/jpeg"}, params={"top_k": 2})
        else:
            r = client.post("/predict", files={"file": (path.name, data, "image/jpeg")}, params={"top_k": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        got = np.array([body["probabilities"][c] for c in classes])
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert body["label"] == classes[int(np.argmax(want))]
        assert [s["label"] for s in body["top_k"]] == [classes[i] for i in np.argsort(-want)[:2]]
        assert (body["width"], body["height"]) == (64, 64)
        assert body["filename"] == (path.name if form == "multipart" else "body")


def test_predict_real_tiffs(client: httpx.Client, bundle_path: Path, shared_data: Path) -> None:
    ucm = shared_data / "ucmerced" / "agricultural" / "agricultural00.tif"
    naip = shared_data / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1_naip-new.tif"
    files = [f for f in (ucm, naip) if f.is_file()]
    if not files:
        pytest.skip("no UC Merced / NAIP TIFFs in the shared data")
    datas = [f.read_bytes() for f in files]
    expected = reference(bundle_path, datas)
    classes = load_bundle(bundle_path).classes
    for f, data, want in zip(files, datas, expected, strict=True):
        r = client.post("/predict", content=data, headers={"content-type": "image/tiff"})
        assert r.status_code == 200, r.text
        body = r.json()
        np.testing.assert_allclose([body["probabilities"][c] for c in classes], want, atol=1e-5)
        if f == naip:  # georeferenced 4-band NAIP: RGB bands scored, bounds and CRS echoed
            assert body["crs"] == "EPSG:26917"
            assert body["bounds"] is not None and len(body["bounds"]) == 4


def test_batch_with_one_bad_file(client: httpx.Client, bundle_path: Path) -> None:
    datas = [p.read_bytes() for p in SAMPLE[:3]]
    files = [("files", (p.name, d, "image/jpeg")) for p, d in zip(SAMPLE[:3], datas, strict=True)]
    files.insert(1, ("files", ("notes.txt", b"not an image at all", "text/plain")))
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["n_ok"], body["n_failed"]) == (3, 1)
    assert [i["filename"] for i in body["items"]] == [SAMPLE[0].name, "notes.txt", SAMPLE[1].name, SAMPLE[2].name]
    assert body["items"][1]["prediction"] is None
    assert body["items"][1]["error"] == "not an image (unidentified format)"
    expected = reference(bundle_path, datas)
    classes = load_bundle(bundle_path).classes
    got = [[i["prediction"]["probabilities"][c] for c in classes] for i in body["items"] if i["prediction"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_concurrent_requests_get_the_in_process_answers(
    base: str, server: tuple[str, object], bundle_path: Path
) -> None:
    paths = [eurosat_sample() / cls / f"{cls}_{n}.jpg" for cls in ("Forest", "River", "SeaLake") for n in range(1, 9)]
    datas = [p.read_bytes() for p in paths]
    expected = reference(bundle_path, datas)
    classes = load_bundle(bundle_path).classes

    def one(data: bytes) -> list[float]:
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.post("/predict", content=data, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            return [r.json()["probabilities"][k] for k in classes]

    stats = server[1].state.service.batcher.stats  # type: ignore[attr-defined]
    before = stats.batches
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, datas))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert stats.max_batch > 1, "concurrent requests should share forward passes"
    assert stats.batches - before < len(datas)


def test_micro_batcher_routes_rows_back_and_propagates_errors() -> None:
    from landsight.serve.batching import MicroBatcher

    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if (x == 99).any():
            raise RuntimeError("bad batch")
        time.sleep(0.01)
        return x.reshape(len(x), -1)[:, :1].astype(np.float32)

    with MicroBatcher(predict, max_batch_size=4, max_wait_ms=20, workers=2) as batcher:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda v: batcher.predict(np.full((1, 2, 2, 1), v, np.uint8)), range(16)))
        assert [float(g[0, 0]) for g in got] == [float(v) for v in range(16)]
        assert max(calls) <= 4 and len(calls) < 16
        with pytest.raises(RuntimeError, match="bad batch"):
            batcher.predict(np.full((1, 2, 2, 1), 99, np.uint8))
        assert batcher.predict(np.full((2, 2, 2, 1), 7, np.uint8)).tolist() == [[7.0], [7.0]]
    with pytest.raises(RuntimeError, match="not running"):
        batcher.submit(np.zeros((1, 2, 2, 1), np.uint8))


# -- bad input: 4xx with a reason, and the server keeps serving ---------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no pixel data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _big_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


JPEG = SAMPLE[0].read_bytes()
BAD = {
    "not an image": (b"hello, I am text pretending to be a PNG", "image/png", 422, "not an image"),
    "truncated": (JPEG[: len(JPEG) // 2], "image/jpeg", 422, "truncated or corrupt"),
    "unsupported content type": (JPEG, "application/json", 415, "is not supported"),
    "no content type": (JPEG, "", 415, "is not supported"),
    "empty body": (b"", "image/png", 400, "empty"),
    "body over the limit": (b"\0" * 2_500_000, "image/png", 413, "exceeds the limit"),
    "pixels over the limit": (_big_png(1200, 1000), "image/png", 413, "over the limit of 1000000"),
    "decompression bomb": (_png_header_only(100_000, 100_000), "image/png", 413, "decompression bomb"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_with_the_reason(client: httpx.Client, case: str) -> None:
    body, ctype, status, words = BAD[case]
    headers = {"content-type": ctype} if ctype else {}
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    answer = r.json()
    assert set(answer) == {"detail", "error"}
    assert words in answer["detail"]
    assert client.post("/predict", content=JPEG, headers={"content-type": "image/jpeg"}).status_code == 200


def test_body_limit_enforced_while_reading_a_chunked_upload(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for _ in range(30):
            yield b"\0" * 100_000

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert "more than" in r.json()["detail"]
    assert client.get("/health/ready").status_code == 200


def test_too_many_files_and_missing_field(client: httpx.Client) -> None:
    files = [("files", (f"t{i}.jpg", JPEG, "image/jpeg")) for i in range(LIMITS["max_batch_files"] + 1)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 413 and r.json()["error"] == "too_many_files", r.text
    r = client.post("/predict", files={"image": ("t.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"], r.text
    r = client.post("/predict/batch", files={"other": ("t.jpg", JPEG, "image/jpeg")})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request", r.text


# -- Open Inference Protocol v2 ------------------------------------------------------------------


def test_v2_metadata_and_health(client: httpx.Client, bundle_path: Path) -> None:
    name = model_name(bundle_path)
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["name"] == name
    assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 224, 224, 3]}
    assert meta["outputs"][0]["shape"] == [-1, len(load_bundle(bundle_path).classes)]
    assert client.get(f"/v2/models/{name}/ready").json() == {"name": name, "ready": True}
    r = client.get("/v2/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"


def test_v2_infer_uint8_and_bytes(client: httpx.Client, bundle_path: Path) -> None:
    name = model_name(bundle_path)
    datas = [p.read_bytes() for p in SAMPLE[:3]]
    expected = reference(bundle_path, datas)
    pixels = np.stack([decode_image(d, "x").array for d in datas])  # (3, 64, 64, 3): the server resizes
    uint8 = {"name": "image", "shape": list(pixels.shape), "datatype": "UINT8", "data": pixels.ravel().tolist()}
    b64 = {"name": "image", "shape": [3], "datatype": "BYTES", "data": [base64.b64encode(d).decode() for d in datas]}
    for tensor in (uint8, b64):
        r = client.post(f"/v2/models/{name}/infer", json={"id": "req-1", "inputs": [tensor]})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == name and out["id"] == "req-1"
        (prob,) = out["outputs"]
        assert prob["name"] == "probabilities" and prob["datatype"] == "FP32"
        assert prob["shape"] == list(expected.shape)
        np.testing.assert_allclose(np.reshape(prob["data"], prob["shape"]), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("tensor", "status"),
    [
        ({"name": "image", "shape": [1, 4, 4, 1], "datatype": "UINT8", "data": [0] * 16}, 422),  # channels
        ({"name": "image", "shape": [1, 4, 4, 3], "datatype": "UINT8", "data": [0] * 5}, 422),  # size
        ({"name": "image", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [300] * 12}, 422),  # range
        ({"name": "image", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": ["a"] * 12}, 422),  # type
        ({"name": "image", "shape": [1, 2000, 2000, 3], "datatype": "UINT8", "data": [0]}, 413),  # pixels
        ({"name": "image", "shape": [1], "datatype": "BYTES", "data": ["!!not base64!!"]}, 422),
        ({"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"text").decode()]}, 422),
        ({"name": "image", "shape": [1], "datatype": "FP32", "data": [0.5]}, 422),
    ],
)
def test_v2_infer_bad_tensors(client: httpx.Client, bundle_path: Path, tensor: dict, status: int) -> None:
    r = client.post(f"/v2/models/{model_name(bundle_path)}/infer", json={"inputs": [tensor]})
    assert r.status_code == status, r.text
    assert r.json()["detail"] and r.json()["error"]
    ok = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(JPEG).decode()]}
    r = client.post("/v2/models/other/infer", json={"inputs": [ok]})
    assert r.status_code == 404 and r.json()["error"] == "model_not_found"


# -- the OpenAPI document, fuzzed ----------------------------------------------------------------


def test_openapi_fuzzed_without_server_errors(base: str) -> None:
    """Schemathesis: bounded examples per operation of /openapi.json; no answer may be a 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    api = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 11
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:  # noqa: ANN001
            case.call_and_validate(checks=[not_a_server_error], timeout=30)

        fuzz()
    assert httpx.get(f"{base}/health/ready").status_code == 200


# -- what the serve path imports -----------------------------------------------------------------


def test_serve_path_never_imports_torch_or_sklearn(bundle_path: Path) -> None:
    code = f"""
import sys, json
import landsight, landsight.cli, landsight.serve
light = [m for m in ("fastapi", "uvicorn", "torch") if m in sys.modules]
from fastapi.testclient import TestClient
from landsight.serve.app import create_app
data = open({str(SAMPLE[0])!r}, "rb").read()
with TestClient(create_app({str(bundle_path)!r})) as c:
    r = c.post("/predict", content=data, headers={{"content-type": "image/jpeg"}})
heavy = [m for m in ("torch", "timm", "torchvision", "sklearn", "skl2onnx") if m in sys.modules]
print(json.dumps({{"status": r.status_code, "light": light, "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": 200, "light": [], "heavy": []}


def test_cli_serve_prints_its_url_and_serves(bundle_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LANDSIGHT_SERVE_TOP_K": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "landsight", "serve", str(bundle_path), "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "landsight serve did not become ready"
            time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", content=JPEG, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["top_k"]) == 2  # LANDSIGHT_SERVE_TOP_K reached the server
    finally:
        proc.terminate()
        proc.wait(15)

"""The Spark engine: local[2] in this process, a loopback standalone cluster through the CLI.

Real imagery from ../shared/data (EuroSAT, UC Merced, a georeferenced NAIP tile). One local
SparkSession serves the whole module; the standalone-cluster runs go through ``python -m
landsight ... --engine spark --master spark://...`` in subprocesses, so they never share a JVM
with it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+ and `java` is not on PATH")

PROBA_ATOL = 1e-5


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from landsight.spark.session import get_session, stop_session

    session = get_session(
        "local[2]",
        {"spark.ui.enabled": "false", "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "4"},
    )
    yield session
    stop_session()


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    from landsight.spark.cluster import standalone_cluster

    with standalone_cluster(workers=1, cores=1, memory="1g") as running:
        yield running


@pytest.fixture(scope="module")
def images(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """40 EuroSAT JPEGs (4 per class), a UC Merced TIFF, a georeferenced NAIP GeoTIFF, a corrupt file."""
    paths = sorted(str(p) for p in (shared_data / "eurosat_rgb").glob("*/*_1[0-3].jpg"))
    assert len(paths) == 40
    paths.append(str(shared_data / "ucmerced" / "agricultural" / "agricultural00.tif"))
    paths.append(str(shared_data / "chesapeake" / "tile_downsampled" / "m_3907833_nw_17_1_naip-new.tif"))
    corrupt = tmp_path_factory.mktemp("bad") / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.append(str(corrupt))
    return paths


def _list_file(folder: Path, paths: list[str]) -> Path:
    listing = folder / "images.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("path").reset_index(drop=True)


def _assert_same_rows(spark_rows: pd.DataFrame, local_rows: pd.DataFrame) -> None:
    assert list(spark_rows.columns) == list(local_rows.columns)
    assert len(spark_rows) == len(local_rows) and spark_rows["path"].is_unique
    pd.testing.assert_frame_equal(_sorted(spark_rows), _sorted(local_rows), check_exact=False, atol=PROBA_ATOL)


def test_predict_matches_the_local_engine_row_for_row(spark, trained, images: list[str], tmp_path: Path) -> None:  # noqa: ANN001
    from landsight import spark as ls
    from landsight.classify.predict import predict as local_predict

    listing = _list_file(tmp_path, images)
    local = local_predict(trained.bundle_path, listing, out=tmp_path / "local.parquet", progress=False, track=False)
    result = ls.predict(trained.bundle_path, listing, out=tmp_path / "spark.parquet", spark=spark, track=False)
    rows = pd.read_parquet(tmp_path / "spark.parquet")
    _assert_same_rows(rows, local)
    assert (result.n_images, result.n_scored, result.n_errors) == (43, 43, 1)
    bad = rows.set_index("path").loc[images[-1]]
    assert bad["error"] and bad["predicted"] == "" and np.isnan(bad["confidence"])
    geo = rows.set_index("path").loc[images[-2]]
    assert geo["crs"] == "EPSG:26917" and geo["minx"] < geo["maxx"] and geo["error"] == ""
    assert np.isnan(rows.set_index("path").loc[images[-3], "minx"])  # UC Merced: not georeferenced


def test_missing_path_is_an_error_row_and_rerun_scores_only_new_images(spark, trained, images, tmp_path) -> None:  # noqa: ANN001
    from landsight import spark as ls
    from landsight.bundle import load_bundle

    out = tmp_path / "preds.parquet"
    missing = str(tmp_path / "gone.jpg")
    first = ls.predict(trained.bundle_path, [*images[:20], missing], out=out, spark=spark, track=False)
    assert (first.n_scored, first.n_errors) == (21, 1)
    parts = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert parts
    second = ls.predict(trained.bundle_path, [*images, missing], out=out, spark=spark, track=False)
    assert (second.n_scored, second.n_images) == (len(images) - 20, len(images) + 1)
    assert {p: p.stat().st_mtime_ns for p in parts} == parts  # earlier part files untouched
    rows = pd.read_parquet(out)
    assert rows["path"].is_unique and len(rows) == len(images) + 1
    assert rows.set_index("path").loc[missing, "error"].startswith("cannot open file")
    again = ls.predict(trained.bundle_path, [*images, missing], out=out, spark=spark, track=False)
    assert again.n_scored == 0 and len(pd.read_parquet(out)) == len(images) + 1
    local = load_bundle(trained.bundle_path).predict([*images, missing])
    _assert_same_rows(rows, local)


def test_a_crash_between_chunks_keeps_the_chunks_already_written(spark, trained, images, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from landsight import spark as ls
    from landsight.spark import score

    out = tmp_path / "crash.parquet"
    real, calls = score.score_frame, []

    def crash_on_second_chunk(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash of the driver (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(score, "score_frame", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ls.predict(trained.bundle_path, images[:20], out=out, chunk_size=8, spark=spark, track=False)
    assert sorted(pd.read_parquet(out)["path"]) == sorted(images[:8])  # the first chunk survived
    monkeypatch.setattr(score, "score_frame", real)
    resumed = ls.predict(trained.bundle_path, images[:20], out=out, chunk_size=8, spark=spark, track=False)
    assert (resumed.n_scored, resumed.n_images) == (12, 20)
    assert pd.read_parquet(out)["path"].is_unique


def test_threads_setting_is_read_on_the_driver(spark) -> None:  # noqa: ANN001
    from landsight.errors import LandsightValueError
    from landsight.spark.score import THREADS_CONF, configured_threads, task_threads

    assert configured_threads(spark) is None and task_threads(None) == 1  # on the driver: no task, default 1
    spark.conf.set(THREADS_CONF, "3")
    try:
        assert configured_threads(spark) == 3 and task_threads(configured_threads(spark)) == 3
        spark.conf.set(THREADS_CONF, "zero")
        with pytest.raises(LandsightValueError, match=THREADS_CONF):
            configured_threads(spark)
    finally:
        spark.conf.unset(THREADS_CONF)


def test_urls_are_read_on_the_executors_with_fsspec(spark, trained, images, tmp_path: Path) -> None:  # noqa: ANN001
    from landsight import spark as ls
    from landsight.bundle import load_bundle

    served = tmp_path / "www"
    served.mkdir()
    for p in images[:6]:
        shutil.copy(p, served / Path(p).name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{Path(p).name}" for p in images[:6]] + [f"{base}/no_such_tile.jpg"]
        listing = _list_file(tmp_path, urls)
        ls.predict(trained.bundle_path, listing, out=tmp_path / "urls.parquet", spark=spark, track=False)
    finally:
        server.shutdown()
    rows = pd.read_parquet(tmp_path / "urls.parquet").set_index("path").loc[urls]
    assert rows.iloc[-1]["error"].startswith("cannot open file") and (rows.iloc[:-1]["error"] == "").all()
    local = load_bundle(trained.bundle_path).predict(images[:6]).set_index("path")
    prob_cols = [c for c in local.columns if c.startswith("prob_")]
    np.testing.assert_allclose(rows.iloc[:-1][prob_cols].to_numpy(), local[prob_cols].to_numpy(), atol=PROBA_ATOL)


def test_one_onnxruntime_session_per_python_worker(spark, trained) -> None:  # noqa: ANN001
    from landsight.bundle import MODEL_FILE

    data = (trained.bundle_path / MODEL_FILE).read_bytes()
    model = spark.sparkContext.broadcast(data)

    def sessions(frames):  # noqa: ANN001, ANN202
        import os

        from landsight.spark.score import task_threads, worker_session

        for frame in frames:
            session = worker_session("digest-of-test-model", model, task_threads())
            yield frame.assign(pid=os.getpid(), session=id(session), threads=session.session.get_session_options()
                               .intra_op_num_threads)  # fmt: skip

    rows = (
        spark.range(64).repartition(16).mapInPandas(sessions, "id long, pid long, session long, threads long")
        .toPandas()
    )  # fmt: skip
    assert rows.groupby("pid")["session"].nunique().eq(1).all()  # 16 partitions, one session per worker
    assert set(rows["threads"]) == {1}  # spark.task.cpus = 1


def test_featurize_on_executors_matches_local_features(spark, images, tmp_path: Path) -> None:  # noqa: ANN001
    from landsight import spark as ls
    from landsight.classify.featurize import featurize
    from landsight.spark.featurize import features_to_numpy

    subset = [*images[:8], images[-1]]
    result = ls.featurize(subset, out=tmp_path / "feats.parquet", spark=spark)
    assert result.n_images == 8 and [p for p, _ in result.failures] == [images[-1]]
    got = pd.read_parquet(tmp_path / "feats.parquet").set_index("path").loc[images[:8]]
    local = featurize(images[:8], progress=False, cache=False)
    np.testing.assert_allclose(features_to_numpy(got["features"]), local.X, atol=1e-4)
    assert list(got["sha256"]) == local.sha256


@pytest.mark.parametrize("kind", ["logreg", "forest"])
def test_mllib_heads_become_onnx_with_the_same_probabilities(spark, kind: str) -> None:  # noqa: ANN001
    """Synthetic features (3 Gaussian blobs): the ONNX head reproduces MLlib's probabilities."""
    import onnxruntime as ort
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from landsight.spark.heads import forest_to_onnx, logistic_to_onnx, make_spark_head

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(150, 16)) + np.repeat(np.eye(3, 16) * 2.0, 50, axis=0)).astype(np.float32)
    y = np.repeat([0.0, 1.0, 2.0], 50)
    df = spark.createDataFrame(pd.DataFrame({"features": list(X), "label_index": y}))
    df = df.withColumn("features", array_to_vector("features"))
    model = make_spark_head(kind, C=1.0, n_train=len(X), n_estimators=10, max_depth=5).fit(df)
    graph = logistic_to_onnx(model, 16) if kind == "logreg" else forest_to_onnx(model, 16, spark)
    expected = np.stack(model.transform(df).select(vector_to_array("probability").alias("p")).toPandas()["p"])
    got = ort.InferenceSession(graph.SerializeToString()).run(["probabilities"], {"features": X})[0]
    np.testing.assert_allclose(got, expected, atol=PROBA_ATOL)
    assert (got.argmax(1) == y).mean() > 0.8


@pytest.fixture(scope="module")
def eurosat_60(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 20 real EuroSAT tiles (crop classes, the hard ones)."""
    root = tmp_path_factory.mktemp("eurosat60")
    for cls in ("AnnualCrop", "Pasture", "PermanentCrop"):
        (root / cls).mkdir()
        for n in range(1, 21):
            shutil.copy(shared_data / "eurosat_rgb" / cls / f"{cls}_{n}.jpg", root / cls)
    return root


@pytest.mark.parametrize("head", ["logreg", "forest"])
def test_spark_train_writes_a_bundle_that_matches_mllib_and_the_local_head(spark, eurosat_60, tmp_path, head) -> None:  # noqa: ANN001
    from pyspark.ml.functions import array_to_vector, vector_to_array

    from landsight import spark as ls
    from landsight.bundle import load_bundle
    from landsight.classify.evaluate import compute_metrics
    from landsight.classify.featurize import cached_backbone_onnx
    from landsight.classify.train import train as local_train
    from landsight.models.backbones import create_backbone
    from landsight.spark.featurize import feature_frame
    from landsight.spark.io import paths_frame

    kw = {"n_estimators": 20} if head == "forest" else {}
    result = ls.train(eurosat_60, out=tmp_path / "s.landsight", head=head, test_size=0.25, spark=spark, track=False,
                      **kw)  # fmt: skip
    assert (result.n_train, result.n_test) == (45, 15)
    bundle = load_bundle(result.bundle_path)
    assert bundle.classes == ["AnnualCrop", "Pasture", "PermanentCrop"] and bundle.meta["engine"]["name"] == "spark"
    assert not list(result.bundle_path.rglob("*.pkl")) and (result.bundle_path / "model.onnx").is_file()
    rows = bundle.predict(result.test_paths)
    proba = rows[[f"prob_{c}" for c in bundle.classes]].to_numpy()
    # The bundle (backbone + ONNX head) gives MLlib's own probabilities for the test images.
    bb = create_backbone("tf_efficientnet_lite0", stages="auto")  # the default pooled stages, as the local train
    assert bundle.meta["backbone"]["stages"] == list(bb.stages) and bb.num_features == 1664
    feats = feature_frame(bb, cached_backbone_onnx(bb), paths_frame(spark, result.test_paths))
    mllib = result.head.transform(feats.withColumn("features", array_to_vector("features")))
    mllib = mllib.select("path", vector_to_array("probability").alias("p")).toPandas().set_index("path")
    np.testing.assert_allclose(np.stack(mllib.loc[result.test_paths, "p"]), proba, atol=1e-4)
    labels = [Path(p).parent.name for p in result.test_paths]
    from_bundle = compute_metrics(labels, proba, bundle.classes, paths=result.test_paths)
    n_test = len(result.test_paths)  # compare counts of images, not floats (0.8 - 0.7333 > 1/15 in binary)
    correct_bundle, correct_spark = (round(m["accuracy"] * n_test) for m in (from_bundle, result.metrics))
    # The two may break ties between equally probable classes differently (a 20-tree forest gives
    # probabilities in steps of 1/20): they may differ by at most the number of tied test images.
    top2 = np.sort(proba, axis=1)[:, -2:]
    n_tied = int((top2[:, 1] - top2[:, 0] < 1e-4).sum())
    assert abs(correct_bundle - correct_spark) <= max(1, n_tied)
    local = local_train(eurosat_60, out=tmp_path / "l.landsight", head=head, test_size=0.25, progress=False,
                        track=False, tta="none", C=1.0, **kw)  # fmt: skip  (Spark's own single-view, C=1 path)
    assert sorted(local.test_paths) == sorted(result.test_paths)  # same split
    assert result.metrics["accuracy"] >= 0.6
    assert abs(round(result.metrics["accuracy"] * n_test) - round(local.metrics["accuracy"] * n_test)) <= 3


def test_engine_option_is_validated() -> None:
    from typer.testing import CliRunner

    from landsight.cli import app

    r = CliRunner().invoke(app, ["predict", "x.landsight", "tiles/", "--engine", "dask"])
    assert r.exit_code != 0 and "--engine" in r.output


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [sys.executable, "-m", "landsight", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)


def test_cli_predict_and_train_on_a_standalone_cluster(cluster, trained, images, eurosat_60, tmp_path) -> None:  # noqa: ANN001
    from landsight.bundle import load_bundle

    spark_opts = ["--engine", "spark", "--master", cluster.master_url, "--conf", "spark.ui.enabled=false",
                  "--conf", "spark.executor.memory=768m", "--no-track", "-q"]  # fmt: skip
    listing = _list_file(tmp_path, images)
    out = tmp_path / "cluster.parquet"
    r = _cli("predict", str(trained.bundle_path), str(listing), "--out", str(out), "--format", "json", *spark_opts)
    assert r.returncode == 3, r.stdout + r.stderr  # partial success: one image skipped
    assert json.loads(r.stdout) == [{"images": 43, "scored": 43, "errors": 1}]
    _assert_same_rows(pd.read_parquet(out), load_bundle(trained.bundle_path).predict(images))

    bundle = tmp_path / "cluster.landsight"
    r = _cli("train", str(eurosat_60), "--head", "logreg", "--test-size", "0.25", "--out", str(bundle), *spark_opts)
    assert r.returncode == 0, r.stdout + r.stderr
    trained_here = load_bundle(bundle)
    assert trained_here.meta["engine"]["master"] == cluster.master_url
    assert trained_here.meta["metrics"]["accuracy"] >= 0.6

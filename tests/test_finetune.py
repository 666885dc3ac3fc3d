import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from landsight.bundle import load_bundle
from landsight.classify.finetune import finetune
from landsight.errors import LandsightValueError
from landsight.models.backbones import create_backbone
from landsight.models.classifier import fc_block_prefix
from landsight.models.fit import parse_lr_schedule, read_history

EPOCH_KEYS = {"train_loss", "train_error", "val_loss", "val_error", "epoch_seconds", "samples_per_second", "lr"}


@pytest.fixture(scope="module")
def pretrained_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in create_backbone("tf_efficientnet_lite0").model.state_dict().items()}


@pytest.mark.parametrize(
    ("retrain", "frozen", "learned"),
    [
        ("last", ["conv_stem.weight", "blocks.6.0.conv_pw.weight", "conv_head.weight"], []),
        ("fc", ["conv_stem.weight", "blocks.5.0.conv_pw.weight"], ["blocks.6.0.conv_pw.weight", "conv_head.weight"]),
        ("all", [], ["conv_stem.weight", "conv_head.weight"]),
    ],
)
def test_retraining_depths(
    retrain: str, frozen: list[str], learned: list[str], small_dataset: Path, tmp_path: Path, pretrained_state
) -> None:  # noqa: ANN001
    out = tmp_path / f"{retrain}.landsight"
    result = finetune(
        small_dataset, out=out, retrain=retrain, epochs=2, batch_size=8, lr=0.01, num_workers=0,
        val_size=0.25, test_size=0.25, progress=False,
    )  # fmt: skip
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert all(EPOCH_KEYS <= set(row) for row in result.history)
    weights = load_file(str(out / "weights.safetensors"))
    net = "features.net.net."  # inside the input normalisation and the stage pooling of the default stages
    for name in frozen:  # BatchNorm statistics included: frozen layers stay in eval mode
        assert torch.equal(weights[f"{net}{name}"], pretrained_state[name]), name
    bn = "bn1.running_mean"  # the default probe-initialised head keeps every BatchNorm's statistics
    assert torch.equal(weights[f"{net}{bn}"], pretrained_state[bn])
    for name in learned:
        assert not torch.equal(weights[f"{net}{name}"], pretrained_state[name]), name
    assert weights["fc.weight"].shape[1] == 80 + 112 + 192 + 1280
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["backbone"]["stages"] == ["blocks.3", "blocks.4", "blocks.5"]
    assert meta["head"] == meta["head"] | {"kind": "finetune", "retrain": retrain}
    assert meta["head"]["params"]["augment"] == {"last": False, "fc": "rotations", "all": True}[retrain]
    assert meta["head"]["params"]["cached_trunk"] == (retrain == "fc") and meta["backbone"]["tta"] == "rot4"
    assert meta["head"]["params"]["head_init"] == "probe" and meta["head"]["params"]["probe"]["C"] > 0
    # predict and evaluate work on the bundle unchanged
    bundle = load_bundle(out)
    preds = bundle.predict(sorted(str(p) for p in (small_dataset / "River").glob("*.jpg"))[:3])
    assert (preds["error"] == "").all()
    np.testing.assert_allclose(preds[[f"prob_{c}" for c in bundle.classes]].sum(axis=1), 1.0, atol=1e-5)
    assert result.metrics["n"] == 9 and result.run_id


def test_bundle_graph_equals_the_torch_classifier(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.data.readers import read_image
    from landsight.models.classifier import ImageClassifier, with_tta

    images = np.stack([read_image(p).array for p in sorted(small_dataset.rglob("*.jpg"))[:4]])
    for tta in ("rot4", "none"):
        out = tmp_path / f"m-{tta}.landsight"
        finetune(small_dataset, out=out, retrain="fc", epochs=1, batch_size=8, num_workers=0, tta=tta, progress=False,
                 track=False)  # fmt: skip
        bundle = load_bundle(out)
        assert bundle.meta["backbone"]["tta"] == tta
        clf = ImageClassifier(create_backbone("tf_efficientnet_lite0", stages="auto"), len(bundle.classes))
        clf.load_state_dict(load_file(str(out / "weights.safetensors")))
        resized = np.stack([bundle.preprocessing.resize(im) for im in images])
        with torch.no_grad():
            expected = torch.softmax(with_tta(clf.eval(), tta)(torch.from_numpy(resized)), 1).numpy()
        assert np.abs(bundle.predict_proba(resized) - expected).max() < 1e-4


def test_lr_schedules_and_fc_mapping() -> None:
    assert parse_lr_schedule("0.2*3,0.1") == [0.2, 0.2, 0.2, 0.1]
    assert parse_lr_schedule("cosine") == "cosine"
    with pytest.raises(LandsightValueError, match="0.2\\*10,0.1"):
        parse_lr_schedule("fast")
    assert fc_block_prefix(create_backbone("resnet18", weights=None).model) == "layer4"
    assert fc_block_prefix(create_backbone("tf_efficientnet_lite0", weights=None).model) == "blocks.6"
    assert fc_block_prefix(create_backbone("alexnet", weights=None).model) == "classifier"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retrain": "half"}, "retrain must be one of"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"head_init": "zeros"}, "head_init must be one of"),
        ({"batchnorm": "sync"}, "batchnorm must be one of"),
        ({"tta": "rot8"}, "tta must be"),
        ({"val_size": 0}, "val_size"),
        ({"retrain": "last", "augment": True}, "cache_features=False"),
        ({"resume": True}, "does not exist"),
    ],
)
def test_bad_parameters_fail_before_training(small_dataset: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(LandsightValueError, match=match):
        finetune(small_dataset, out=tmp_path / "x.landsight", progress=False, track=False, **kwargs)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "landsight", "finetune", *args, "--no-track", "-q", "--num-workers", "0"]


def test_sigkill_mid_run_then_resume_finishes_the_right_epochs(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed.landsight"
    args = _cli(str(small_dataset), "--out", str(out), "--retrain", "fc", "--epochs", "4", "--batch-size", "8")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ckpt = Path(f"{out}.checkpoints")
    deadline = time.monotonic() + 240
    while not ((ckpt / "last.ckpt").is_file() and read_history(ckpt / "history.jsonl")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read_history(ckpt / "history.jsonl"))
    assert 1 <= done_before < 4 and not (out / "model.onnx").exists()
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = (ckpt / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3]  # no epoch repeated, none missing
    assert load_bundle(out).predict([str(next((small_dataset / "Forest").glob("*.jpg")))])["error"].iloc[0] == ""


def test_two_processes_ddp_write_a_valid_bundle(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp.landsight"
    args = _cli(str(small_dataset), "--out", str(out), "--retrain", "last", "--epochs", "2", "--devices", "2")
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["head"]["params"]["devices"] == 2 and len(meta["training"]["history"]) == 2
    preds = load_bundle(out).predict(sorted(str(p) for p in small_dataset.rglob("*.jpg"))[:4])
    assert (preds["error"] == "").all()


def test_release_process_group_destroys_the_group_after_fitting(tmp_path: Path) -> None:
    """The DDP teardown hook leaves no process group for interpreter exit (where gloo could abort)."""
    from landsight.models.fit import ReleaseProcessGroup

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert torch.distributed.is_initialized()
    ReleaseProcessGroup().teardown(None, None, "fit")  # type: ignore[arg-type]
    assert not torch.distributed.is_initialized()
    ReleaseProcessGroup().teardown(None, None, "fit")  # type: ignore[arg-type]  # and without a group: no error


def test_torchrun_two_processes_write_one_bundle_and_one_mlflow_run(small_dataset: Path, tmp_path: Path) -> None:
    import socket

    import mlflow

    out, store = tmp_path / "torchrun.landsight", f"sqlite:///{tmp_path / 'mlflow.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
            "-m", "landsight", "finetune", str(small_dataset), "--out", str(out), "--retrain", "last", "--epochs", "2",
            "--devices", "2", "-q", "--num-workers", "0", "--tracking-uri", store]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("best epoch") == 1  # only rank 0 reports (notes go to stderr)
    client = mlflow.MlflowClient(store)
    runs = [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]
    assert [run.info.status for run in runs] == ["FINISHED"]
    assert json.loads((out / "bundle.json").read_text())["head"]["params"]["devices"] == 2


def test_history_lr_follows_the_per_epoch_schedule(small_dataset: Path, tmp_path: Path) -> None:
    result = finetune(
        small_dataset, out=tmp_path / "s.landsight", retrain="last", epochs=3, lr_schedule="0.2*2,0.05",
        batch_size=8, num_workers=0, progress=False, track=False,
    )  # fmt: skip
    assert [row["lr"] for row in result.history] == pytest.approx([0.2, 0.2, 0.05])


def test_default_lr_follows_the_head_initialisation(small_dataset: Path, tmp_path: Path) -> None:
    """A probe-initialised head fine-tunes at 0.001 by default (it starts at its optimum), a random one at 0.01."""
    for head_init, lr in (("probe", 0.001), ("random", 0.01)):
        out = tmp_path / f"{head_init}.landsight"
        result = finetune(small_dataset, out=out, retrain="last", epochs=1, head_init=head_init, batch_size=8,
                          num_workers=0, progress=False, track=False)  # fmt: skip
        assert [row["lr"] for row in result.history] == pytest.approx([lr])
        assert json.loads((out / "bundle.json").read_text())["head"]["params"]["lr"] == pytest.approx(lr)


def test_random_initialisations_get_distinct_cache_keys() -> None:
    from landsight.classify.featurize import cache_key

    a, b = (create_backbone("tf_efficientnet_lite0", weights=None) for _ in range(2))
    assert cache_key(a) != cache_key(b)


def test_a_class_left_without_readable_images_is_named(small_dataset: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    for cls in ("Forest", "River"):
        shutil.copytree(small_dataset / cls, root / cls)
    (root / "Broken").mkdir()
    for i in range(12):
        (root / "Broken" / f"b{i}.jpg").write_bytes(b"")
    with pytest.raises(LandsightValueError, match=r"lacks classes \['Broken'\]"):
        finetune(root, out=tmp_path / "x.landsight", retrain="last", epochs=1, progress=False, track=False)


def test_trunk_split_reproduces_the_network_and_trains_only_the_last_stage() -> None:
    from landsight.models.trunk import split_trunk

    net = create_backbone("tf_efficientnet_lite0").model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    trunk, tail = split_trunk(net, fc_block_prefix(net), x)  # type: ignore[misc]
    with torch.no_grad():
        torch.testing.assert_close(tail(trunk(x)), net(x), rtol=1e-4, atol=1e-4)
    trunk_ids, tail_ids = {id(p) for p in trunk.parameters()}, {id(p) for p in tail.parameters()}
    assert not trunk_ids & tail_ids and id(net.blocks[6][0].conv_pw.weight) in tail_ids
    assert id(net.blocks[5][0].conv_pw.weight) in trunk_ids and id(net.conv_head.weight) in tail_ids

    class Shuffled(torch.nn.Module):  # synthetic: children registered in another order than they run
        def __init__(self) -> None:
            super().__init__()
            self.b = torch.nn.Conv2d(4, 4, 1)
            self.a = torch.nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)).mean((2, 3))

    assert split_trunk(Shuffled(), "a", x[:, :, :8, :8]) is None


@pytest.mark.parametrize("n_classes", [3, 2])
def test_probe_init_gives_the_logistic_regression_probabilities(n_classes: int) -> None:
    """The final layer set from a standardised scikit-learn probe outputs the probe's probabilities (synthetic X)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from landsight.models.classifier import probe_init

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), 20)
    X = (rng.normal(size=(len(y), 16)) * rng.uniform(0.1, 5, 16) + y[:, None] * 0.7 + 3).astype(np.float32)
    fc = torch.nn.Linear(16, n_classes)
    record = probe_init(fc, X, y, C=0.5)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(X, y)
    with torch.no_grad():
        got = torch.softmax(fc(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(got, reference.predict_proba(X), atol=1e-4)
    assert record["C"] == 0.5 and record["train_accuracy"] == round(100 * reference.score(X, y), 2)
    with pytest.raises(LandsightValueError, match="covering classes"):
        probe_init(fc, X, np.zeros(len(y), dtype=int))


def test_frozen_batchnorm_keeps_every_running_statistic(small_dataset: Path, tmp_path: Path, pretrained_state) -> None:  # noqa: ANN001
    """``batchnorm="train"`` moves the statistics of the layers that learn; ``"frozen"`` (probe default) does not."""
    moved = {}
    for mode in ("frozen", "train"):
        out = tmp_path / f"{mode}.landsight"
        finetune(small_dataset, out=out, retrain="fc", epochs=1, batch_size=8, num_workers=0, batchnorm=mode,
                 progress=False, track=False)  # fmt: skip
        weights = load_file(str(out / "weights.safetensors"))
        moved[mode] = [k for k, v in pretrained_state.items() if "running_mean" in k
                       and not torch.equal(weights[f"features.net.net.{k}"], v)]  # fmt: skip
    assert moved["frozen"] == [] and moved["train"] and all(k.startswith(("blocks.6", "bn2")) for k in moved["train"])


def test_cached_trunk_reports_and_skips_unreadable_images(small_dataset: Path, tmp_path: Path) -> None:
    """The trunk pass is the read check of the default fc fine-tune: bad files are listed, the run goes on."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(small_dataset, root)
    bad = [root / "Forest" / "synthetic_empty.jpg", root / "River" / "synthetic_truncated.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(next((root / "River").glob("*.jpg")).read_bytes()[:200])
    out = tmp_path / "m.landsight"
    result = finetune(root, out=out, epochs=1, batch_size=8, num_workers=0, val_size=0.25, test_size=0.25,
                      progress=False, track=False)  # fmt: skip
    assert sorted(p for p, _ in result.skipped) == sorted(str(p) for p in bad)
    assert all(reason for _, reason in result.skipped)
    assert json.loads((out / "bundle.json").read_text())["head"]["params"]["cached_trunk"] is True
    assert "synthetic_empty" in (out / "skipped.csv").read_text()
    assert result.metrics["n"] == 9 and not set(result.test_paths) & {str(p) for p in bad}


def test_cached_trunk_with_pooled_stages_computes_the_exported_features(small_dataset: Path, tmp_path: Path) -> None:
    """Pooled stages cached with the trunk + the tail give the rot4 features of the whole classifier."""
    from landsight.classify.finetune_data import _trunk_and_tail, _with_cached_stages
    from landsight.data.readers import read_image
    from landsight.models.classifier import ImageClassifier
    from landsight.models.modules import RotationAverage
    from landsight.models.trunk import CachedTail, cache_trunk

    bb = create_backbone("tf_efficientnet_lite0", stages="auto")
    clf = ImageClassifier(bb, 3).eval()
    trunk, tail, cached, pooled, shape = _with_cached_stages(_trunk_and_tail(clf, bb), clf, bb)  # type: ignore[misc]
    assert pooled == 80 + 112 + 192 and shape == (192, 7, 7) and cached is not trunk
    paths = sorted(str(p) for p in small_dataset.rglob("*.jpg"))[:3]
    views, failed = cache_trunk(cached, paths, bb.preprocessing, tmp_path)
    assert not failed and views[paths[0]].shape == (4, pooled + 192 * 7 * 7)
    model = CachedTail(tail, clf.fc, pooled=pooled, shape=shape).eval()
    images = np.stack([bb.preprocessing.resize(read_image(p).array) for p in paths])
    with torch.no_grad():
        got = model.features(torch.from_numpy(np.stack([views[p] for p in paths])))
        expected = RotationAverage(clf.features)(torch.from_numpy(images))
    assert got.shape == (3, 1664)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-2 * float(expected.abs().max()))  # float16 cache
    # a named stage inside the trained part cannot be cached: the fine-tune then trains on images
    late = create_backbone("tf_efficientnet_lite0", stages="blocks.5,blocks.6")
    late_clf = ImageClassifier(late, 3).eval()
    assert _with_cached_stages(_trunk_and_tail(late_clf, late), late_clf, late) is None  # type: ignore[arg-type]


def test_resume_checks_what_the_checkpoint_belongs_to(small_dataset: Path, tmp_path: Path) -> None:
    """--resume on other data, or of a truncated checkpoint, is one line, never a silent mix or a traceback."""
    out = tmp_path / "r.landsight"
    common = {"out": out, "epochs": 1, "retrain": "last", "progress": False, "track": False, "num_workers": 0}
    finetune(small_dataset, **common)
    other = tmp_path / "other"
    shutil.copytree(small_dataset, other)
    next(other.rglob("*.jpg")).unlink()  # the same classes, another training set
    with pytest.raises(LandsightValueError, match=r"belongs to another run \(data: "):
        finetune(other, resume=True, **common)
    last = Path(f"{out}.checkpoints") / "last.ckpt"
    last.write_bytes(last.read_bytes()[:200])
    with pytest.raises(LandsightValueError, match="cannot be read as a checkpoint"):
        finetune(small_dataset, resume=True, **common)

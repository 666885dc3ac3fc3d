"""Near-duplicate detection on real imagery: planted copies are found, distinct images are not paired."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from landsight.data.duplicates import drop_cross_split_duplicates
from landsight.errors import LandsightValueError
from landsight.results.dedup import DedupResult, apply_removal, find_duplicates, plan_removal

UCM = "ucmerced/denseresidential/denseresidential07.tif"


def _plant(src: Path, folder: Path, stem: str) -> tuple[Path, Path, Path]:
    """A real image as PNG, a re-encoded JPEG copy (quality 55) and a 90 % resized copy."""
    folder.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    orig, jpeg, small = folder / f"{stem}.png", folder / f"{stem}_q55.jpg", folder / f"{stem}_small.png"
    img.save(orig)
    img.save(jpeg, quality=55)
    img.resize((img.width * 9 // 10, img.height * 9 // 10), Image.Resampling.BILINEAR).save(small)
    return orig, jpeg, small


def _distinct(shared_data: Path, folder: Path, n_per_class: int = 10) -> list[Path]:
    """30 distinct real EuroSAT images (3 classes) copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for cls in ("Forest", "Industrial", "River"):
        for i in range(1, n_per_class + 1):
            dst = folder / f"{cls}_{i}.jpg"
            shutil.copy(shared_data / "eurosat_rgb" / cls / f"{cls}_{i}.jpg", dst)
            out.append(dst)
    return out


def test_planted_reencoded_and_resized_copies_are_grouped(shared_data: Path, tmp_path: Path) -> None:
    planted = _plant(shared_data / UCM, tmp_path / "data", "ucm")
    _distinct(shared_data, tmp_path / "data")
    result = find_duplicates(tmp_path / "data", progress=False)
    assert result.n_images == 33 and result.n_groups == 1
    assert sorted(result.groups["path"]) == sorted(str(p) for p in planted)
    assert (result.groups["distance"] <= result.threshold).all()


def test_no_false_pairs_among_distinct_real_images(shared_data: Path, tmp_path: Path) -> None:
    _distinct(shared_data, tmp_path / "d")
    for name in ("forest/forest03.tif", "river/river11.tif", "agricultural/agricultural05.tif"):
        shutil.copy(shared_data / "ucmerced" / name, tmp_path / "d" / Path(name).name)
    result = find_duplicates(tmp_path / "d", progress=False)
    assert result.n_images == 33 and result.n_groups == 0 and result.groups.empty


def test_cross_split_duplicates_and_removal_plan_keep_the_training_copy(shared_data: Path, tmp_path: Path) -> None:
    orig, jpeg, _ = _plant(shared_data / UCM, tmp_path / "train", "ucm")
    (tmp_path / "test").mkdir()
    shutil.move(jpeg, tmp_path / "test" / jpeg.name)
    _distinct(shared_data, tmp_path / "test", n_per_class=4)
    result = find_duplicates([tmp_path / "train", tmp_path / "test"], progress=False)
    cross = result.cross_split_groups
    assert set(cross["split"]) == {str(tmp_path / "train"), str(tmp_path / "test")}
    plan = plan_removal(result, keep_split=str(tmp_path / "test"))
    assert str(tmp_path / "test" / jpeg.name) not in set(plan["path"])  # kept where asked
    plan = plan_removal(result)  # default: the first source given (train) keeps its copy
    assert set(plan["kept"]) == {str(orig)} and len(plan) == 2
    moved = apply_removal(plan, move_to=tmp_path / "dups")
    assert not any(Path(p).exists() for p in moved) and len(list((tmp_path / "dups").rglob("*.*"))) == 2
    assert orig.exists()


def test_cli_lists_and_deletes_only_when_asked(shared_data: Path, tmp_path: Path) -> None:
    from landsight.cli import app

    orig, jpeg, small = _plant(shared_data / UCM, tmp_path / "data", "ucm")
    _distinct(shared_data, tmp_path / "data", n_per_class=3)
    (tmp_path / "data" / "empty.jpg").write_bytes(b"")  # unreadable: reported, never fatal
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    runner = CliRunner()

    out = runner.invoke(app, ["dedup", str(tmp_path / "data"), "--report", str(tmp_path / "g.csv"), "-q"])
    assert out.exit_code == 0, out.output
    assert "1 near-duplicate groups" in out.output and "empty.jpg" in out.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before  # nothing deleted without --remove
    assert len(pd.read_csv(tmp_path / "g.csv")) == 3

    out = runner.invoke(app, ["dedup", str(tmp_path / "data"), "--remove", "--keep", "elsewhere/", "-q"])
    assert out.exit_code == 2 and "--keep must be one of" in out.output  # a typo never keeps the wrong copy

    out = runner.invoke(app, ["dedup", str(tmp_path / "data"), "--remove", "-q"], input="n\n")
    assert out.exit_code == 1 and "nothing changed" in out.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before

    out = runner.invoke(app, ["dedup", str(tmp_path / "data"), "--remove", "-q"], input="y\n")
    assert out.exit_code == 0, out.output
    listed = out.output.index(jpeg.name), out.output.index(small.name)
    assert max(listed) < out.output.index("deleted 2 image(s)")  # listed before deleting
    assert orig.exists() and not jpeg.exists() and not small.exists()


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(LandsightValueError, match="hash method"):
        find_duplicates(tmp_path, method="md5", progress=False)
    with pytest.raises(LandsightValueError, match="threshold"):
        find_duplicates(tmp_path, threshold=-1, progress=False)


def test_train_dedup_drops_test_images_duplicating_training_images(small_dataset: Path, tmp_path: Path) -> None:
    from landsight.classify.train import train

    test = tmp_path / "test"
    for cls in ("Forest", "River", "SeaLake"):
        (test / cls).mkdir(parents=True)
        # duplicates across the split: a renamed byte copy and a lossless PNG re-save of training images (pHash
        # of near-uniform 64 px water / forest tiles is not stable under JPEG re-encoding: see the README)
        shutil.copy(small_dataset / cls / f"{cls}_1.jpg", test / cls / "copy_1.jpg")
        Image.open(small_dataset / cls / f"{cls}_2.jpg").save(test / cls / "copy_2.png")
        shutil.copy(small_dataset / cls / f"{cls}_12.jpg", test / cls / "distinct.jpg")
    train_dir = tmp_path / "train"
    for cls in ("Forest", "River", "SeaLake"):
        (train_dir / cls).mkdir(parents=True)
        for i in range(1, 9):
            shutil.copy(small_dataset / cls / f"{cls}_{i}.jpg", train_dir / cls)
    catalog = pd.DataFrame(
        {"path": [str(p) for p in sorted(train_dir.rglob("*.jpg"))] + [str(p) for p in sorted(test.rglob("*.*"))]}
    )
    catalog["split"] = ["train"] * 24 + ["test"] * 9
    kept, dropped = drop_cross_split_duplicates(catalog, progress=False)
    assert len(kept) == 27 and sorted(Path(p).name for p in dropped["path"]) == ["copy_1.jpg"] * 3 + ["copy_2.png"] * 3

    result = train(train_dir, test=test, out=tmp_path / "m.landsight", dedup=True, progress=False, track=False)
    assert result.n_test == 3 and all(Path(p).name == "distinct.jpg" for p in result.test_paths)
    meta = json.loads((result.bundle_path / "bundle.json").read_text())
    assert len(meta["data"]["dropped_duplicates"]) == 6


def test_removal_plan_never_removes_an_image_beyond_the_threshold_of_the_one_kept(tmp_path: Path) -> None:
    # Synthetic hashes (test fixture): a chain A ~ B ~ C, A and C 6 bits apart, threshold 4.
    hashes = {"a.png": "0000000000000000", "b.png": "0000000000000007", "c.png": "000000000000003f"}
    groups = pd.DataFrame({"group": 0, "path": list(hashes), "split": "src", "hash": list(hashes.values()),
                           "distance": [0, 3, 6]})  # fmt: skip
    plan = plan_removal(DedupResult(groups, n_images=3, threshold=4))
    assert plan[["path", "kept", "distance"]].values.tolist() == [["b.png", "a.png", 3]]  # c.png stays
    for name in ("x.png", "y.png"):
        (tmp_path / name).write_bytes(b"synthetic")
    (tmp_path / "dups").mkdir()
    (tmp_path / "dups" / "x.png").write_bytes(b"moved by an earlier run")
    move = pd.DataFrame({"path": [str(tmp_path / "y.png"), str(tmp_path / "x.png")]})
    with pytest.raises(LandsightValueError, match="overwrite"):
        apply_removal(move, move_to=tmp_path / "dups")
    assert (tmp_path / "x.png").exists() and (tmp_path / "y.png").exists()  # nothing moved

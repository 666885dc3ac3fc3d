"""Tests of landsight.data.catalog on small copies of the real EuroSAT imagery."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from landsight.data.archive import safe_extract
from landsight.data.catalog import build_catalog, check_test_labels, validate_catalog
from landsight.data.listing import list_images
from landsight.data.readers import read_image
from landsight.data.splitting import split_catalog
from landsight.errors import DataNotFoundError, LandsightValueError, UnsafeArchiveError

CLASSES = ("Forest", "River", "Highway")
PER_CLASS = 5


@pytest.fixture
def class_dir(shared_data: Path, tmp_path: Path) -> Path:
    """tmp/eurosat/<Class>/<Class>_<n>.jpg: 3 classes x 5 real EuroSAT images."""
    root = tmp_path / "eurosat"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for n in range(1, PER_CLASS + 1):
            shutil.copy(shared_data / "eurosat_rgb" / name / f"{name}_{n}.jpg", root / name)
    return root


def _images(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def _zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def _assert_catalog(catalog: pd.DataFrame, classes: tuple[str, ...] = CLASSES) -> None:
    assert list(catalog.columns[:2]) == ["path", "label"]
    assert sorted(catalog["label"].unique()) == sorted(classes)
    assert (catalog["label"].value_counts() == PER_CLASS).all()
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in catalog["path"])
    assert catalog.equals(catalog.sort_values(["label", "path"]).reset_index(drop=True))
    read_image(catalog["path"].iloc[0])  # the paths point at real, readable images


def test_class_folders(class_dir: Path) -> None:
    (class_dir / "Forest" / "nested").mkdir()
    shutil.move(class_dir / "Forest" / "Forest_1.jpg", class_dir / "Forest" / "nested")
    (class_dir / "Forest" / ".hidden.jpg").write_bytes(b"")
    (class_dir / ".git").mkdir()
    (class_dir / "README.md").write_text("not an image")
    catalog = build_catalog(class_dir)
    _assert_catalog(catalog)
    assert any("nested" in p for p in catalog["path"])


def test_single_wrapper_folder_is_descended(class_dir: Path, tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    shutil.move(class_dir, outer / "EuroSAT")
    _assert_catalog(build_catalog(outer))


@pytest.mark.parametrize(
    ("suffix", "delimiter", "header", "relative"),
    [
        (".csv", ",", True, True),
        (".csv", ",", False, False),
        (".tsv", "\t", False, True),
        (".txt", "\t", True, True),
        (".map", ";", False, True),
    ],
)
def test_map_file(class_dir: Path, suffix: str, delimiter: str, header: bool, relative: bool) -> None:
    lines = [f"path{delimiter}label"] if header else []
    for path in _images(class_dir):
        shown = path.relative_to(class_dir).as_posix() if relative else str(path)
        lines.append(f"{shown}{delimiter}{path.parent.name.lower()}")
    map_file = class_dir / f"labels{suffix}"
    map_file.write_text("\n".join(lines) + "\n\n")
    _assert_catalog(build_catalog(map_file), tuple(c.lower() for c in CLASSES))


def test_cntk_map_with_class_names(class_dir: Path, tmp_path: Path) -> None:
    index = {name: i for i, name in enumerate(sorted(CLASSES))}
    map_file = class_dir / "train_map.txt"
    map_file.write_text("".join(f"{p.relative_to(class_dir)}\t{index[p.parent.name]}\n" for p in _images(class_dir)))
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(sorted(CLASSES)) + "\n")
    catalog = build_catalog(map_file, class_names=names)
    _assert_catalog(catalog)
    assert all(Path(p).parent.name == label for p, label in catalog[["path", "label"]].values)
    plain = build_catalog(map_file)  # without class_names the indices stay as strings
    assert sorted(plain["label"].unique()) == ["0", "1", "2"]
    names.write_text("Forest\n")
    with pytest.raises(LandsightValueError, match="names only 1 classes"):
        build_catalog(map_file, class_names=names)


def test_map_file_missing_paths(class_dir: Path) -> None:
    rows = [f"{p},{p.parent.name}" for p in _images(class_dir)]
    rows += [f"gone_{i}.jpg,Forest" for i in range(7)]
    map_file = class_dir / "labels.csv"
    map_file.write_text("\n".join(rows))
    with pytest.raises(DataNotFoundError, match="7 missing file") as info:
        build_catalog(map_file)
    assert str(info.value).count("gone_") == 5


def test_map_file_malformed_row(class_dir: Path) -> None:
    map_file = class_dir / "labels.csv"
    map_file.write_text("a.jpg,Forest\nb.jpg,Forest,extra\n")
    with pytest.raises(LandsightValueError, match="line 2"):
        build_catalog(map_file)


def test_zip_of_class_folders_is_extracted_to_cache_and_reused(class_dir: Path, tmp_path: Path) -> None:
    archive = _zip(class_dir, tmp_path / "eurosat.zip", prefix="EuroSAT/")
    first = build_catalog(archive)
    _assert_catalog(first)
    cache = Path(os.environ["LANDSIGHT_CACHE_DIR"]) / "extracted"
    assert all(Path(p).is_relative_to(cache) for p in first["path"])
    mtime = Path(first["path"].iloc[0]).stat().st_mtime_ns
    second = build_catalog(archive)
    assert second.equals(first)
    assert Path(second["path"].iloc[0]).stat().st_mtime_ns == mtime  # reused, not re-extracted


def test_zip_with_map_file(class_dir: Path, tmp_path: Path) -> None:
    index = {name: i for i, name in enumerate(CLASSES)}
    (class_dir / "train_map.txt").write_text(
        "".join(f"{p.relative_to(class_dir)}\t{index[p.parent.name]}\n" for p in _images(class_dir))
    )
    (class_dir / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (class_dir / "README.txt").write_text("EuroSAT sample, see https://github.com/phelber/EuroSAT\n")
    archive = _zip(class_dir, tmp_path / "cntk.zip")
    catalog = build_catalog(archive, class_names="classes.txt", extract_dir=tmp_path / "out")
    _assert_catalog(catalog)
    assert all(Path(p).parent.name == label for p, label in catalog[["path", "label"]].values)


def test_flat_zip_labels_from_names(class_dir: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in _images(class_dir):
        label = path.parent.name.lower()
        shutil.copy(path, flat / f"{label}.{path.stem.split('_')[1]}.jpg")
    archive = _zip(flat, tmp_path / "train.zip", prefix="train/")
    catalog = build_catalog(archive, extract_dir=tmp_path / "x")
    _assert_catalog(catalog, tuple(c.lower() for c in CLASSES))


def test_plain_folder_of_loose_images_is_rejected(class_dir: Path, tmp_path: Path) -> None:
    flat = tmp_path / "loose"
    flat.mkdir()
    for path in _images(class_dir):
        shutil.copy(path, flat)
    with pytest.raises(LandsightValueError, match="class sub-folders"):
        build_catalog(flat)


def test_separate_train_and_test(class_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    test_dir = tmp_path / "test"
    for name in ("Forest", "River"):
        (test_dir / name).mkdir(parents=True)
        shutil.copy(shared_data / "eurosat_rgb" / name / f"{name}_300.jpg", test_dir / name)
    train, test = build_catalog(class_dir), build_catalog(test_dir)
    check_test_labels(train, test)
    (test_dir / "SeaLake").mkdir()
    shutil.copy(shared_data / "eurosat_rgb" / "SeaLake" / "SeaLake_1.jpg", test_dir / "SeaLake")
    with pytest.raises(LandsightValueError, match=r"\['SeaLake'\]"):
        check_test_labels(train, build_catalog(test_dir))


def test_empty_class_folder(class_dir: Path) -> None:
    (class_dir / "Pasture").mkdir()
    (class_dir / "Pasture" / "notes.txt").write_text("todo")
    with pytest.raises(LandsightValueError, match="Pasture.*holds no images"):
        build_catalog(class_dir)


@pytest.mark.parametrize("zipped", [False, True])
def test_single_class(class_dir: Path, tmp_path: Path, zipped: bool) -> None:
    for name in CLASSES[1:]:
        shutil.rmtree(class_dir / name)
    source = _zip(class_dir, tmp_path / "one.zip") if zipped else class_dir
    with pytest.raises(LandsightValueError, match=r"at least two classes, found 1: \['Forest'\]"):
        build_catalog(source, extract_dir=tmp_path / "x")


def test_validate_catalog_empty_and_columns() -> None:
    with pytest.raises(LandsightValueError, match="empty"):
        validate_catalog(pd.DataFrame({"path": [], "label": []}), source="nothing")
    with pytest.raises(LandsightValueError, match="label"):
        validate_catalog(pd.DataFrame({"path": ["a.jpg"]}), source="x")


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nowhere"):
        build_catalog(tmp_path / "nowhere")
    (tmp_path / "model.pt").write_bytes(b"\0")
    with pytest.raises(LandsightValueError, match="not a supported source"):
        build_catalog(tmp_path / "model.pt")


@pytest.mark.parametrize("member", ["../evil.jpg", "/tmp/landsight-evil.jpg", "a/../../evil.jpg"])
def test_zip_slip_is_rejected(shared_data: Path, tmp_path: Path, member: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Forest/Forest_1.jpg", (shared_data / "eurosat_rgb/Forest/Forest_1.jpg").read_bytes())
        zf.writestr(zipfile.ZipInfo(member), b"payload")
    dest = tmp_path / "box" / "out"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError, match="zip slip"):
        safe_extract(archive, dest)
    with pytest.raises(UnsafeArchiveError):
        build_catalog(archive, extract_dir=dest)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not Path("/tmp/landsight-evil.jpg").exists()


def test_zip_symlink_member_is_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("Forest/link.jpg")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(archive, tmp_path / "out")


def test_safe_extract_checks(class_dir: Path, tmp_path: Path) -> None:
    not_zip = tmp_path / "fake.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(LandsightValueError, match="not a zip"):
        safe_extract(not_zip, tmp_path / "a")
    archive = _zip(class_dir, tmp_path / "ok.zip")
    dest = safe_extract(archive, tmp_path / "ok")
    assert len(_images(dest)) == len(CLASSES) * PER_CLASS
    assert safe_extract(archive, dest) == dest  # complete extraction is reused
    assert not list(tmp_path.glob(".ok.part-*"))  # no temporary folder left behind
    with pytest.raises(LandsightValueError, match="holds other files"):
        safe_extract(archive, class_dir)


def test_split_is_stratified_and_seeded(shared_data: Path, tmp_path: Path) -> None:
    rows = [
        (str(shared_data / "eurosat_rgb" / c / f"{c}_{n}.jpg"), c) for c in ("Forest", "River") for n in range(1, 21)
    ]
    catalog = pd.DataFrame(rows, columns=["path", "label"])
    a = split_catalog(catalog, test_size=0.2, val_size=0.1, random_state=3)
    b = split_catalog(catalog, test_size=0.2, val_size=0.1, random_state=3)
    assert a["split"].tolist() == b["split"].tolist()
    counts = a.groupby(["label", "split"]).size().unstack()
    assert counts.loc["Forest"].to_dict() == {"test": 4, "train": 14, "val": 2}
    assert counts.loc["River"].to_dict() == {"test": 4, "train": 14, "val": 2}
    c = split_catalog(catalog, test_size=0.2, val_size=0.1, random_state=4)
    assert a["split"].tolist() != c["split"].tolist()
    assert a[["path", "label"]].equals(catalog)
    no_test = split_catalog(catalog, test_size=0, val_size=0.25)
    assert set(no_test["split"]) == {"train", "val"}


def test_split_errors() -> None:
    catalog = pd.DataFrame({"path": list("abcdefg"), "label": ["x"] * 5 + ["rare"] * 2})
    with pytest.raises(LandsightValueError, match=r"'rare' has only 2"):
        split_catalog(catalog, test_size=0.2, val_size=0.2)
    with pytest.raises(LandsightValueError, match="test_size"):
        split_catalog(catalog, test_size=1.5)
    with pytest.raises(LandsightValueError, match="below 1"):
        split_catalog(catalog, test_size=0.5, val_size=0.5)


def test_list_images(class_dir: Path, tmp_path: Path) -> None:
    expected = [str(p) for p in _images(class_dir)]
    (class_dir / "notes.txt").write_text("skip me")
    assert list_images(class_dir) == expected
    assert list_images(str(class_dir / "**" / "*.jpg")) == expected
    assert list_images(str(class_dir / "Forest" / "Forest_?.jpg")) == expected[:PER_CLASS]
    list_file = class_dir / "todo.lst"
    list_file.write_text("# images to score\n\nForest/Forest_2.jpg\n" + expected[-1] + "\n")
    assert list_images(list_file) == [str(class_dir / "Forest" / "Forest_2.jpg"), expected[-1]]
    assert list_images(expected[0]) == [expected[0]]


def test_list_images_errors(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nothing"):
        list_images(tmp_path / "nothing")
    with pytest.raises(DataNotFoundError, match=r"\*\.png"):
        list_images(str(tmp_path / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "list.txt").write_text("missing.jpg\n")
    with pytest.raises(DataNotFoundError, match="missing.jpg"):
        list_images(tmp_path / "list.txt")


# -- zip bounds on the whole archive, and the extraction cache's size quota ----------------------


def _sample_zip(path: Path, n_images: int, prefix: str = "") -> Path:
    """A zip of ``n_images`` real EuroSAT tiles (Forest) from the package's bundled sample."""
    from landsight.data.sample import eurosat_sample

    with zipfile.ZipFile(path, "w") as zf:
        for n in range(1, n_images + 1):
            zf.write(eurosat_sample() / "Forest" / f"Forest_{n}.jpg", f"{prefix}Forest/Forest_{n}.jpg")
    return path


def test_zip_of_many_members_under_the_member_threshold_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A synthetic zip bomb: 20 members of 8 MiB - 1 zeros each (160 MiB from ~160 KB).

    No member is over the 8 MiB per-member ratio threshold, so only the whole archive's ratio
    (about 1000, over the default 200) catches it, before anything is written.
    """
    from landsight.data.archive import ZIP_RATIO_MIN_BYTES
    from landsight.errors import ResourceLimitError

    for var in ("LANDSIGHT_ZIP_MAX_BYTES", "LANDSIGHT_ZIP_MAX_RATIO", "LANDSIGHT_ZIP_MAX_MEMBERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANDSIGHT_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "many.zip"
    zeros = bytes(ZIP_RATIO_MIN_BYTES - 1)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(20):
            zf.writestr(f"Forest/mask_{i}.tif", zeros)
    assert archive.stat().st_size < 400_000
    before = sorted(tmp_path.rglob("*"))
    whole = r"in 20 members \(compression ratio \d+, over the limit of 200\)"  # the archive, no one member
    with pytest.raises(ResourceLimitError, match=whole) as info:
        safe_extract(archive, tmp_path / "out")
    message = str(info.value)
    assert str(archive) in message and "LANDSIGHT_ZIP_MAX_RATIO" in message and "\n" not in message
    with pytest.raises(ResourceLimitError, match="max_ratio"):
        build_catalog(archive)  # into the cache
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [p for p in before if p.is_file()]
    # a small archive of compressible members (one-class masks) still extracts: 3 MiB in all
    small = tmp_path / "masks.zip"
    with zipfile.ZipFile(small, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"Forest/mask_{i}.tif", bytes(1024**2))
    assert len(list(safe_extract(small, tmp_path / "masks").rglob("*.tif"))) == 3


def test_zip_cache_quota_prunes_the_oldest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from landsight.cache import cache_dir

    monkeypatch.setenv("LANDSIGHT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LANDSIGHT_ZIP_KEEP_EXTRACTIONS", raising=False)
    archives = [_sample_zip(tmp_path / f"z{i}.zip", n_images=3, prefix=f"v{i}/") for i in range(4)]
    one = sum(info.file_size for info in zipfile.ZipFile(archives[0]).infolist())
    monkeypatch.setenv("LANDSIGHT_ZIP_CACHE_BYTES", str(int(2.5 * one)))  # room for two extractions
    for i, archive in enumerate(archives[:3]):
        safe_extract(archive, cache_dir("extracted") / f"z{i}")
        os.utime(cache_dir("extracted") / f"z{i}" / ".landsight-extracted", (1000 + i, 1000 + i))
    assert sorted(p.name for p in cache_dir("extracted").iterdir()) == ["z1", "z2"]
    safe_extract(archives[1], cache_dir("extracted") / "z1")  # reused: now the most recent
    safe_extract(archives[3], cache_dir("extracted") / "z3")
    assert sorted(p.name for p in cache_dir("extracted").iterdir()) == ["z1", "z3"]
    # outside the cache nothing is pruned
    mine = [safe_extract(a, tmp_path / "mine" / a.stem) for a in archives]
    assert all(p.is_dir() for p in mine)
    monkeypatch.setenv("LANDSIGHT_ZIP_CACHE_BYTES", "lots")
    with pytest.raises(LandsightValueError, match="LANDSIGHT_ZIP_CACHE_BYTES='lots'"):
        safe_extract(archives[0], cache_dir("extracted") / "z0")

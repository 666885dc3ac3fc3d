from pathlib import Path

import numpy as np
import pytest
import torch

from landsight.classify.featurize import FeatureExtractor, featurize
from landsight.data.readers import read_image
from landsight.models.backbones import create_backbone


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(create_backbone("tf_efficientnet_lite0"), device="cpu")


def _paths(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))


def test_onnx_features_equal_torch_features(small_dataset: Path, extractor: FeatureExtractor) -> None:
    paths = _paths(small_dataset)[:6]
    images = np.stack([extractor.backbone.preprocessing.resize(read_image(p).array) for p in paths])
    with torch.no_grad():
        expected = extractor.backbone.input_module()(torch.from_numpy(images)).numpy()
    got = extractor(images)
    assert got.shape == (6, 1280) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-4


def test_same_padding_is_folded_into_the_convolutions(small_dataset: Path, tmp_path: Path) -> None:
    """The exported graph pads inside its convolutions (no Pad, no shape arithmetic) and computes the same features."""
    import dataclasses

    import onnx
    from timm.layers.conv2d_same import Conv2dSame

    from landsight.models.onnx_graph import export_backbone
    from landsight.runtime import OnnxModel

    backbone = dataclasses.replace(create_backbone("tf_efficientnet_lite0"), tta="rot4")
    path = export_backbone(backbone, tmp_path / "rot4.onnx")
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert "Pad" not in ops and ops.count("Ceil") == 0 and ops.count("Conv") == 49
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads and [1, 1, 2, 2] in pads  # TF "same" of stride-2 3x3 / 5x5 convs on even sizes
    module = backbone.input_module()
    assert any(isinstance(m, Conv2dSame) for m in module.modules())  # the torch module itself is untouched
    paths = _paths(small_dataset)[:4]
    images = np.stack([backbone.preprocessing.resize(read_image(p).array) for p in paths])
    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy()
    assert np.abs(OnnxModel(path, device="cpu")(images) - expected).max() < 1e-4


def test_second_run_reads_the_cache(small_dataset: Path, extractor: FeatureExtractor, tmp_path: Path) -> None:
    paths = _paths(small_dataset)[:10]
    first = featurize(paths, extractor=extractor, progress=False, batch_size=4)
    # the same bytes under another name hit the cache too: the key is the content hash
    copy = tmp_path / "renamed.jpg"
    copy.write_bytes(Path(paths[0]).read_bytes())
    second = featurize([*paths, str(copy)], extractor=extractor, progress=False, batch_size=4)
    assert second.n_cached == 11
    np.testing.assert_array_equal(second.X[:10], first.X)
    np.testing.assert_array_equal(second.X[10], first.X[0])


def test_bad_files_are_reported_and_skipped(small_dataset: Path, extractor: FeatureExtractor, tmp_path: Path) -> None:
    good = _paths(small_dataset)[:3]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good[0]).read_bytes()[:400])
    bad = [str(tmp_path / n) for n in ("empty.jpg", "notes.jpg", "truncated.jpg", "missing.jpg")]
    result = featurize([good[0], *bad, *good[1:]], extractor=extractor, progress=False, cache=False)
    assert result.paths == good
    reasons = dict(result.failures)
    assert set(reasons) == set(bad)
    assert reasons[bad[0]] == "zero-byte file"
    assert "truncated" in reasons[bad[2]]
    assert "No such file" in reasons[bad[3]]


def test_batch_size_does_not_change_features(small_dataset: Path, extractor: FeatureExtractor) -> None:
    paths = _paths(small_dataset)[:5]
    a = featurize(paths, extractor=extractor, progress=False, cache=False, batch_size=1, num_workers=0)
    b = featurize(paths, extractor=extractor, progress=False, cache=False, batch_size=5)
    assert np.abs(a.X - b.X).max() < 1e-4


def test_stage_features_are_the_pooled_stages_then_the_final_features(small_dataset: Path, tmp_path: Path) -> None:
    """``stages="auto"``: blocks.3-5 of lite0 average-pooled (80 + 112 + 192), then the usual 1280; torch = ONNX."""
    from landsight.models.backbones import with_stages
    from landsight.models.onnx_graph import export_backbone
    from landsight.runtime import OnnxModel

    plain = create_backbone("tf_efficientnet_lite0")
    staged = with_stages(plain, "auto")
    assert staged.stages == ("blocks.3", "blocks.4", "blocks.5") and staged.num_features == 80 + 112 + 192 + 1280
    assert with_stages(staged, "none").num_features == 1280 and with_stages(staged, "auto") is staged
    paths = _paths(small_dataset)[:4]
    images = np.stack([plain.preprocessing.resize(read_image(p).array) for p in paths])
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():  # the stages by hand, one after another
        h = plain.model.bn1(plain.model.conv_stem(x))
        pooled = []
        for i, block in enumerate(plain.model.blocks):
            h = block(h)
            if i in (3, 4, 5):
                pooled.append(h.mean(dim=(2, 3)))
        by_hand = torch.cat([*pooled, plain.model.forward_head(plain.model.bn2(plain.model.conv_head(h)))], 1).numpy()
        got = staged.input_module()(torch.from_numpy(images)).numpy()
        final = plain.input_module()(torch.from_numpy(images)).numpy()
    assert np.abs(got - by_hand).max() < 1e-4
    assert np.array_equal(got[:, 384:], final)  # the final features are untouched
    onnx_path = export_backbone(staged, tmp_path / "staged.onnx")
    assert np.abs(OnnxModel(onnx_path, device="cpu")(images) - got).max() < 1e-4


def test_stages_are_part_of_the_feature_cache_key(small_dataset: Path) -> None:
    from landsight.classify.featurize import cache_key

    paths = _paths(small_dataset)[:3]
    plain = featurize(paths, progress=False)
    staged = featurize(paths, stages="auto", progress=False)  # same images, a warm cache for the plain key
    assert plain.X.shape == (3, 1280) and staged.X.shape == (3, 1664)
    assert np.abs(staged.X[:, 384:] - plain.X).max() < 1e-4
    assert cache_key(staged.backbone) != cache_key(plain.backbone) and "blocks.4" in cache_key(staged.backbone)


def test_unknown_stage_names_the_stages_there_are() -> None:
    from landsight.errors import LandsightValueError
    from landsight.models.backbones import resolve_stages

    model = create_backbone("tf_efficientnet_lite0").model
    with pytest.raises(LandsightValueError, match=r"unknown stage\(s\) \['layer3'\].*blocks\.6"):
        create_backbone("tf_efficientnet_lite0", stages="blocks.4,layer3")
    assert resolve_stages(model, " blocks.2 ,blocks.4") == ("blocks.2", "blocks.4")
    assert resolve_stages(model, "none") == () and resolve_stages(model, ()) == ()
    resnet = create_backbone("torchvision/resnet18", weights=None).model
    assert resolve_stages(resnet, "auto") == ()  # measured on EfficientNet-Lite only: no guess elsewhere
    assert create_backbone("torchvision/resnet18", weights=None, stages="layer3").num_features == 256 + 512

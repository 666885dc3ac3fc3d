from pathlib import Path

import numpy as np
import pytest
import torch

from landsight.errors import LandsightValueError, WeightsUnavailableError
from landsight.models.backbones import OFFLINE_WEIGHTS, create_backbone, load_imagenet_classifier

# ImageNet-1k class indices (Deng et al., CVPR 2009).
TABBY, TIGER_CAT, PERSIAN, SIAMESE, EGYPTIAN_CAT = 281, 282, 283, 284, 285
ESPRESSO, CUP = 967, 968


def _imagenet_top5(model: torch.nn.Module, image: np.ndarray) -> list[int]:
    bb = create_backbone("tf_efficientnet_lite0")
    x = bb.preprocessing.resize(image)
    module = bb.input_module()
    module.net = model
    with torch.no_grad():
        logits = module(torch.from_numpy(x[None]))
    return logits.topk(5).indices[0].tolist()


@pytest.mark.parametrize(
    ("photo", "expected"),
    [("chelsea", {TABBY, TIGER_CAT, EGYPTIAN_CAT}), ("coffee", {ESPRESSO, CUP})],
)
def test_default_weights_are_imagenet_trained(photo: str, expected: set[int]) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    image = getattr(skimage_data, photo)()
    top5 = _imagenet_top5(load_imagenet_classifier("tf_efficientnet_lite0"), image)
    assert top5[0] in expected, top5


@pytest.mark.parametrize("name", sorted(OFFLINE_WEIGHTS))
def test_offline_backbones_bring_their_preprocessing(name: str) -> None:
    bb = create_backbone(name)
    assert bb.weights.startswith("imagenet:")
    assert bb.preprocessing.mean == (0.5, 0.5, 0.5) and bb.preprocessing.interpolation == "bicubic"
    assert bb.num_features == 1280
    out = bb.input_module()(torch.zeros((2, *bb.preprocessing.input_size, 3), dtype=torch.uint8))
    assert out.shape == (2, 1280)


def test_torchvision_preprocessing_from_weights_meta() -> None:
    bb = create_backbone("torchvision/resnet18", weights=None)
    assert bb.num_features == 512 and bb.weights == "random"
    assert bb.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    assert create_backbone("alexnet", weights=None).num_features == 4096


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file_loads_strictly(tmp_path: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    source = create_backbone("resnet18", weights=None)
    import timm

    full = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    bb = create_backbone("resnet18", weights=path)
    assert bb.weights == str(path)
    got = bb.model.state_dict()["conv1.weight"]
    assert torch.equal(got, state["conv1.weight"])
    assert source.weights_digest != bb.weights_digest


def test_mismatched_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "resnet34.pt"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not match 'resnet18'"):
        create_backbone("resnet18", weights=path)


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Path("/etc/passwd")}, path)  # a non-tensor object needs unpickling
    with pytest.raises(WeightsUnavailableError, match="weights_only=True"):
        create_backbone("resnet18", weights=path)


def test_no_silent_random_weights_when_offline() -> None:
    with pytest.raises(WeightsUnavailableError, match="--weights"):
        create_backbone("resnet18")  # timm weights need the hub; HF_HUB_OFFLINE=1 in tests


def test_unknown_backbone() -> None:
    with pytest.raises(LandsightValueError, match="unknown backbone 'resnet5000'"):
        create_backbone("resnet5000")


def test_four_band_input_adapts_first_conv() -> None:
    bb = create_backbone("tf_efficientnet_lite0", bands=(1, 2, 3, 4))
    assert bb.preprocessing.bands == (1, 2, 3, 4) and len(bb.preprocessing.mean) == 4
    assert bb.model.conv_stem.weight.shape[1] == 4

"""ONNX graphs: a backbone exported from torch, a scikit-learn head converted by skl2onnx, merged.

The classification graph of a bundle takes ``image``: uint8 ``(N, H, W, C)`` resized to the
backbone's input size (before normalisation, which is inside the graph) and returns
``probabilities``: float32 ``(N, n_classes)``. The backbone-only graph returns ``features``:
float32 ``(N, D)``. Both run in onnxruntime, without torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

    from landsight.data.preprocessing import Preprocessing
    from landsight.models.backbones import Backbone

OPSET = 17
IMAGE_INPUT = "image"
FEATURES_OUTPUT = "features"
PROBABILITIES_OUTPUT = "probabilities"
#: Bumped when exported graphs change (not their outputs): cached backbone graphs are then re-exported.
#: 2: fixed "same" padding folded into the convolutions (:func:`static_same_padding`).
EXPORT_REVISION = 2


def export_backbone(backbone: Backbone, path: str | Path) -> Path:
    """Export a backbone (with its uint8 input normalisation) to an ONNX file.

    Args:
        backbone: The backbone to export.
        path: Destination ``.onnx`` file; written atomically.

    Returns:
        The path written. The graph maps ``image`` uint8 ``(N, H, W, C)`` to ``features``
        float32 ``(N, D)``, with a dynamic batch axis.
    """
    return export_image_model(backbone.input_module(), backbone.preprocessing, path, FEATURES_OUTPUT)


def export_image_model(module: Any, preprocessing: Preprocessing, path: str | Path, output: str) -> Path:
    """Export a torch module taking the resized uint8 image to ONNX (TorchScript exporter).

    Args:
        module: ``torch.nn.Module`` mapping ``(N, H, W, C)`` uint8 to ``(N, K)`` float32.
        preprocessing: Gives H, W and C (``len(mean)``).
        path: Destination ``.onnx`` file; written atomically.
        output: Name of the graph output (``"features"`` or ``"probabilities"``).

    Returns:
        The path written; input ``image``, output ``output``, dynamic batch axis.
    """
    import torch

    path = Path(path)
    module = module.eval()
    h, w = preprocessing.input_size
    dummy = torch.zeros((1, h, w, len(preprocessing.mean)), dtype=torch.uint8)
    module = static_same_padding(module, dummy)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(tmp),
            input_names=[IMAGE_INPUT],
            output_names=[output],
            dynamic_axes={IMAGE_INPUT: {0: "batch"}, output: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    fold_pads_into_convs(tmp, dummy.numpy())
    tmp.replace(path)
    return path


def fold_pads_into_convs(path: str | Path, example: Any) -> int:
    """Fold zero ``Pad`` nodes into the ``pads`` of the ``Conv`` they feed, in place.

    What :func:`static_same_padding` leaves is ``Pad`` (fixed, possibly asymmetric amounts, as
    TensorFlow "same" padding of stride-2 convolutions is) + ``Conv``; an ONNX ``Conv`` pads
    asymmetrically itself, so the ``Pad`` (a full copy of the feature map, and in an int8 graph
    a dequantize / pad / quantize round trip) is dropped. The amounts are read by running the
    graph once on ``example``; only constant zero padding of the two spatial axes, feeding one
    ``Conv`` without ``auto_pad``, is folded. Outputs are unchanged.

    Args:
        path: ONNX file, rewritten when anything was folded.
        example: A valid input (the export's dummy input, ``numpy``).

    Returns:
        Number of ``Pad`` nodes folded.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    candidates = []
    for node in graph.node:
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        users = consumers.get(node.output[0], []) if node.op_type == "Pad" else []
        if len(users) != 1 or mode != b"constant" or users[0].op_type != "Conv":
            continue
        conv = users[0]
        if conv.input[0] != node.output[0] or any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET")
                                                  for a in conv.attribute):  # fmt: skip
            continue
        candidates.append((node, conv))
    if not candidates:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = {n.input[i]: i for n, _ in candidates for i in (1, 2) if len(n.input) > i and n.input[i]}
    known = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for name, i in wanted.items():  # pads are int64; the fill value has the data's type (float here)
        if name not in known:
            kind = onnx.TensorProto.INT64 if i == 1 else onnx.TensorProto.FLOAT
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, kind, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        extra = [o.name for o in session.get_outputs()][len(graph.output) :]
        values = {**known, **dict(zip(extra, session.run(extra, {graph.input[0].name: example}), strict=True))}
    except Exception:  # noqa: BLE001  (a graph the probe cannot run, e.g. a non-float fill: keep it as exported)
        return 0
    folded = 0
    for pad, conv in candidates:
        amounts = np.asarray(values[pad.input[1]]).astype(np.int64).ravel()
        fill = values.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
        if len(amounts) != 8 or amounts[[0, 1, 4, 5]].any() or (amounts < 0).any():
            continue
        if fill is not None and np.asarray(fill).any():
            continue
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        new = [old[0] + int(amounts[2]), old[1] + int(amounts[3]), old[2] + int(amounts[6]), old[3] + int(amounts[7])]
        for attr in list(conv.attribute):
            if attr.name == "pads":
                conv.attribute.remove(attr)
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    _prune_dead_nodes(graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return folded


def _prune_dead_nodes(graph: Any) -> None:
    """Remove nodes none of whose outputs are used (the amount computations of folded pads)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def static_same_padding(module: Any, example: Any) -> Any:
    """A copy of ``module`` whose TensorFlow-"same" convolutions pad by fixed amounts, for one input size.

    timm's ``Conv2dSame`` (the ``tf_*`` EfficientNets' stride-2 convolutions) works out its
    padding from the input's shape on every call; exported to ONNX that is a chain of
    ``Shape``/``Gather``/``Ceil``/... nodes feeding a ``Pad`` whose amounts onnxruntime cannot fold
    (the batch axis is dynamic), so the ``Pad`` stays a separate float step, and in an int8 graph
    forces a dequantize / pad / quantize round trip. With the input size fixed (bundle graphs
    take images resized to ``input_size``), each such convolution becomes ``ZeroPad2d`` (constant
    amounts, which onnxruntime's pad fusion folds into the convolution) + a plain ``Conv2d``
    with the same weights; outputs are identical. A convolution called with more than one input
    size in one forward pass (e.g. the rotated views of a non-square input) is left as it was.

    Args:
        module: ``torch.nn.Module`` to export; not modified.
        example: An input of the exported size (the export's dummy input).

    Returns:
        ``module`` itself when it has no ``Conv2dSame``, otherwise a modified deep copy.
    """
    import copy

    import torch
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    names = [name for name, m in module.named_modules() if isinstance(m, Conv2dSame)]
    if not names:
        return module
    module = copy.deepcopy(module)
    sizes: dict[str, set[tuple[int, int]]] = {name: set() for name in names}
    hooks = [
        module.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: sizes[name].add(tuple(args[0].shape[-2:]))
        )
        for name in names
    ]
    with torch.no_grad():
        module(example)
    for hook in hooks:
        hook.remove()
    for name, seen in sizes.items():
        if len(seen) != 1:
            continue
        (ih, iw), conv = next(iter(seen)), module.get_submodule(name)
        pad_h = get_same_padding(ih, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(iw, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        plain = torch.nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, conv.groups,
            bias=conv.bias is not None,
        )  # fmt: skip
        plain.load_state_dict(conv.state_dict())
        pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)  # left, right, top, bottom
        fixed = torch.nn.Sequential(torch.nn.ZeroPad2d(pad), plain)
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, fixed)
    return module.eval()


def head_to_onnx(head: Any, num_features: int) -> onnx.ModelProto:
    """Convert a fitted scikit-learn classifier (or pipeline) to ONNX with skl2onnx.

    Args:
        head: Fitted estimator with ``predict_proba``.
        num_features: Input feature dimension D.

    Returns:
        Graph mapping ``features`` float32 ``(N, D)`` to ``probabilities`` float32
        ``(N, n_classes)`` (and ``label``), columns in ``head.classes_`` order.

    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    final = head.steps[-1][1] if hasattr(head, "steps") else head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_sklearn(
            head,
            initial_types=[(FEATURES_OUTPUT, FloatTensorType([None, num_features]))],
            options={id(final): {"zipmap": False}},
            target_opset={"": OPSET, "ai.onnx.ml": 3},
        )


def merge_backbone_head(backbone_graph: onnx.ModelProto, head_graph: onnx.ModelProto) -> onnx.ModelProto:
    """Join the backbone and head graphs into one image -> probabilities graph.

    Args:
        backbone_graph: From :func:`export_backbone` (output ``features``).
        head_graph: From :func:`head_to_onnx` (input ``features``).

    Returns:
        Graph with input ``image`` and the single output ``probabilities``.

    """
    import onnx
    import onnx.compose

    head_graph = onnx.compose.add_prefix(head_graph, prefix="head/")
    opsets = {op.domain: op.version for op in backbone_graph.opset_import}
    for op in head_graph.opset_import:
        opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    for graph in (backbone_graph, head_graph):
        del graph.opset_import[:]
        graph.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
        graph.ir_version = max(backbone_graph.ir_version, head_graph.ir_version)
    merged = onnx.compose.merge_models(
        backbone_graph,
        head_graph,
        io_map=[(FEATURES_OUTPUT, f"head/{FEATURES_OUTPUT}")],
        outputs=[f"head/{PROBABILITIES_OUTPUT}"],
    )
    # Give the output its plain name.
    for node in merged.graph.node:
        for i, out in enumerate(node.output):
            if out == f"head/{PROBABILITIES_OUTPUT}":
                node.output[i] = PROBABILITIES_OUTPUT
    merged.graph.output[0].name = PROBABILITIES_OUTPUT
    onnx.checker.check_model(merged)
    return merged

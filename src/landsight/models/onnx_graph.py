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


def bytes_into_first_qconv(path: str | Path) -> dict[str, Any] | None:
    """Feed the uint8 image straight to the first int8 convolution of a QDQ graph, in place.

    A landsight graph casts its uint8 image to float and normalises it, ``y = (x / 255 - mean) /
    std``, before the first convolution; in a statically quantized (QDQ) graph that float
    tensor is then quantized again to uint8 for the first ``QLinearConv``: four full-size float
    passes over every view of every image (cast, divide, subtract, divide, quantize), about a
    fifth of the int8 graph's time. When the normalisation is the same affine map on every band,
    ``y = s * (x - c)``, it *is* a uint8 quantization of ``y`` with scale ``s`` and zero point
    ``c``: the image bytes are fed to the first convolution's ``DequantizeLinear`` with scale
    ``s`` and zero point ``round(c)``, and the float chain is removed. This is how TensorFlow
    Lite's int8 EfficientNet-Lite models take their input (scale 1/127.5 = 0.0078, zero point
    128; Liu, "Higher accuracy on vision models with EfficientNet-Lite", TensorFlow blog, 2020).

    When ``c`` is not an integer (127.5 for mean 0.5) the dequantized input is off by
    ``s * (round(c) - c)`` everywhere (at most half a quantization step, the same as quantizing
    the float tensor); the first convolution's int32 bias is corrected for it, which is exact
    away from the zero padding of the image border. The bias is requantized to the new input
    scale (QLinearConv reads it at input scale x weight scale).

    Args:
        path: A QDQ ONNX file from ``onnxruntime.quantization.quantize_static``; rewritten
            when the rewrite applies.

    Returns:
        ``{"scale": s, "zero_point": z, "offset": s * (z - c), "bias_corrected": n}`` when
        rewritten, ``None`` when the graph does not have this shape (normalisation differing
        between bands, a zero point outside 0..255, a first quantized tensor that does not
        come from a uint8 cast, a consumer other than a convolution); the file is then left
        as it was.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: node for node in graph.node for o in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    inits = {i.name: i for i in graph.initializer}

    def constant(name: str) -> Any:
        """The value of a constant tensor (initializer, Constant node, Identity of one), else None."""
        if name in inits:
            return numpy_helper.to_array(inits[name]).astype(np.float64)
        node = producer.get(name)
        if node is not None and node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return None if attr is None else numpy_helper.to_array(attr.t).astype(np.float64)
        if node is not None and node.op_type == "Identity":
            return constant(node.input[0])
        return None

    try:
        typed = onnx.shape_inference.infer_shapes(model).graph.value_info
        dtypes = {v.name: v.type.tensor_type.elem_type for v in typed}
    except Exception:  # noqa: BLE001  (no types, no rewrite)
        return None
    dtypes.update({i.name: i.type.tensor_type.elem_type for i in graph.input})
    for quant in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        chain, tensor = [], quant.input[0]
        while (node := producer.get(tensor)) is not None and node.op_type in ("Div", "Sub", "Mul", "Add"):
            a, b = constant(node.input[0]), constant(node.input[1])
            if (a is None) == (b is None) or (a is not None and node.op_type == "Div"):
                break
            chain.append((node.op_type, b if b is not None else a, b is None))
            tensor = node.input[0] if b is not None else node.input[1]
        cast = producer.get(tensor)
        if cast is None or cast.op_type != "Cast" or dtypes.get(cast.input[0]) != onnx.TensorProto.UINT8 or not chain:
            continue
        scale, offset = np.float64(1.0), np.float64(0.0)  # y = scale * x + offset, composed in graph order
        for op, k, constant_first in reversed(chain):
            if op == "Div":
                scale, offset = scale / k, offset / k
            elif op == "Mul":
                scale, offset = scale * k, offset * k
            elif op == "Add":
                offset = offset + k
            else:
                scale, offset = (-scale, k - offset) if constant_first else (scale, offset - k)
        scale, offset = np.asarray(scale).ravel(), np.asarray(offset).ravel()
        s, o = float(scale[0]), float(offset[0])
        if s <= 0 or not (np.allclose(scale, s, rtol=1e-6, atol=0) and np.allclose(offset, o, rtol=1e-6, atol=1e-9)):
            return None
        centre = -o / s
        zero_point = int(np.round(centre))
        if not 0 <= zero_point <= 255:
            return None
        dequants = consumers.get(quant.output[0], [])
        if not dequants or any(d.op_type != "DequantizeLinear" for d in dequants):
            return None
        convs = [c for d in dequants for c in consumers.get(d.output[0], [])]
        if not convs or any(c.op_type != "Conv" or c.input[0] not in {d.output[0] for d in dequants} for c in convs):
            return None
        delta = s * (zero_point - centre)
        corrected = 0
        for conv in convs:
            w_dq = producer.get(conv.input[1])
            b_dq = producer.get(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
            if w_dq is None or w_dq.op_type != "DequantizeLinear" or b_dq is None or b_dq.op_type != "DequantizeLinear":
                return None
            if any(name not in inits for name in (*w_dq.input[:2], *b_dq.input[:2])):
                return None
            w_q, w_scale = (numpy_helper.to_array(inits[n]) for n in w_dq.input[:2])
            w_zero = numpy_helper.to_array(inits[w_dq.input[2]]) if len(w_dq.input) > 2 else 0
            b_q, b_scale = (numpy_helper.to_array(inits[n]) for n in b_dq.input[:2])
            per_out = (-1,) + (1,) * (w_q.ndim - 1)
            weights = (w_q.astype(np.float64) - np.reshape(w_zero, per_out if np.ndim(w_zero) else ())) * np.reshape(
                w_scale, per_out if np.ndim(w_scale) else ()
            )
            bias = b_q.astype(np.float64) * b_scale + delta * weights.reshape(len(weights), -1).sum(axis=1)
            new_scale = (s * w_scale.astype(np.float64)).astype(np.float32)
            new_bias = np.round(bias / new_scale).astype(np.int32)
            names = (f"{b_dq.input[0]}_bytes_input", f"{b_dq.input[1]}_bytes_input")
            graph.initializer.extend([numpy_helper.from_array(new_bias, names[0]),
                                      numpy_helper.from_array(new_scale, names[1])])  # fmt: skip
            b_dq.input[0], b_dq.input[1] = names
            corrected += 1
        scale_name, zero_name = f"{quant.output[0]}_bytes_scale", f"{quant.output[0]}_bytes_zero_point"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(s, dtype=np.float32), scale_name),
            numpy_helper.from_array(np.array(zero_point, dtype=np.uint8), zero_name),
        ])  # fmt: skip
        for dq in dequants:
            dq.input[0], dq.input[1] = cast.input[0], scale_name
            if len(dq.input) > 2:
                dq.input[2] = zero_name
            else:
                dq.input.append(zero_name)
        _prune_dead_nodes(graph)
        used = {name for node in graph.node for name in node.input}
        for init in [i for i in graph.initializer if i.name not in used]:
            graph.initializer.remove(init)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return {"scale": s, "zero_point": zero_point, "offset": delta, "bias_corrected": corrected}
    return None

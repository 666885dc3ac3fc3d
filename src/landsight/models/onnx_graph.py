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
    tmp.replace(path)
    return path


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

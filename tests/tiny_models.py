"""Models made in milliseconds, without training: a checkpoint of an untrained classifier, and hand-built ONNX
graphs (right, or wrong in one chosen way) with their sidecars, for the tests of hostile and broken models."""

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cats_model.inference import file_sha256, sidecar_path

CLASSES = ["Abyssinian", "Bengal", "Birman"]


def tiny_checkpoint(path: Path, class_names=CLASSES, image_size: int = 32) -> Path:
    """An untrained mobilenet_v3_small saved as training saves it (Lightning's keys, plain hparams)."""
    import lightning as L
    import torch

    from cats_model.model.classifier import CatClassifier

    model = CatClassifier(
        list(class_names), backbone="mobilenet_v3_small", pretrained=False, image_size=image_size
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


def tiny_onnx(
    path: Path,
    outputs: int = len(CLASSES),
    image_size: int = 32,
    class_names=CLASSES,
    one_row: bool = False,
    nan: bool = False,
) -> Path:
    """image (N, 3, S, S) -> flattened -> logits (N, outputs), with its sidecar. `image_size` is the size the graph
    takes (the sidecar always says 32); `one_row`: one row of logits whatever N; `nan`: every logit NaN."""
    features = 3 * image_size * image_size
    weights = np.random.default_rng(0).normal(size=(features, outputs)).astype(np.float32) * 0.01
    if nan:
        weights[:] = np.nan
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["rows" if one_row else "logits"]),
    ]
    if one_row:
        nodes.append(helper.make_node("ReduceMean", ["rows", "axes"], ["logits"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, image_size, image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, outputs])],
        [numpy_helper.from_array(weights, "weights")]
        + ([numpy_helper.from_array(np.array([0], np.int64), "axes")] if one_row else []),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    sidecar = {
        "class_names": list(class_names),
        "backbone": "tiny",
        "image_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "sha256": file_sha256(path),
    }
    sidecar_path(path).write_text(json.dumps(sidecar))
    return path

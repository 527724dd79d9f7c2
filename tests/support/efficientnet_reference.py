"""An independent numpy forward pass of EfficientNet-Lite0, written from the PyTorch code.

It follows ``efficientnet_lite_pytorch==0.1.0`` step by step in its own layout (NCHW, float64,
PyTorch's weight shapes as stored): block strings decoded as there, every convolution preceded
by the explicit zero padding ``Conv2dStaticSamePadding`` computes for a 224 x 224 input, batch
norm in eval mode, ReLU6, the skip connection only where PyTorch takes it. It shares no code
with the Keras port it checks.
"""

import math
import re

import numpy as np

BLOCK_STRINGS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
EPSILON = 1e-3
IMAGE_SIZE = 224


def decode(block_string: str) -> dict[str, int]:
    options = {}
    for op in block_string.split("_"):
        key, value = re.split(r"(\d.*)", op)[:2]
        options[key] = value
    return {
        "repeats": int(options["r"]),
        "kernel": int(options["k"]),
        "stride": int(options["s"][0]),
        "expand": int(options["e"]),
        "in": int(options["i"]),
        "out": int(options["o"]),
    }


def static_same_padding(image_size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) as Conv2dStaticSamePadding: the extra pixel, if any, goes after."""
    out = math.ceil(image_size / stride)
    pad = max((out - 1) * stride + kernel - image_size, 0)
    return pad // 2, pad - pad // 2


def conv2d(x: np.ndarray, weight: np.ndarray, *, stride: int, groups: int = 1) -> np.ndarray:
    """F.conv2d after the static same padding, for one image: x (C, H, W), weight OIHW."""
    channels, height, _ = x.shape
    out_channels, _, kh, kw = weight.shape
    top, bottom = static_same_padding(height, kh, stride)
    left, right = static_same_padding(x.shape[2], kw, stride)
    x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (C, OH, OW, kh, kw)
    if groups == 1:
        return np.einsum("chwij,ocij->ohw", windows, weight, optimize=True)
    assert groups == channels == out_channels  # depthwise
    return np.einsum("chwij,cij->chw", windows, weight[:, 0], optimize=True)


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    mean = state[f"{prefix}.running_mean"][:, None, None]
    var = state[f"{prefix}.running_var"][:, None, None]
    gamma = state[f"{prefix}.weight"][:, None, None]
    beta = state[f"{prefix}.bias"][:, None, None]
    return (x - mean) / np.sqrt(var + EPSILON) * gamma + beta


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def forward_logits(image_hwc: np.ndarray, state_dict: dict[str, np.ndarray]) -> np.ndarray:
    """The 1000 logits for one normalised image of shape (224, 224, 3)."""
    state = {key: value.astype(np.float64) for key, value in state_dict.items()}
    x = image_hwc.astype(np.float64).transpose(2, 0, 1)
    x = relu6(batch_norm(conv2d(x, state["_conv_stem.weight"], stride=2), state, "_bn0"))
    index = 0
    for block_string in BLOCK_STRINGS:
        args = decode(block_string)
        for repeat in range(args["repeats"]):
            stride = args["stride"] if repeat == 0 else 1
            inputs_filters = args["in"] if repeat == 0 else args["out"]
            prefix = f"_blocks.{index}"
            inputs = x
            if args["expand"] != 1:
                x = conv2d(x, state[f"{prefix}._expand_conv.weight"], stride=1)
                x = relu6(batch_norm(x, state, f"{prefix}._bn0"))
            x = conv2d(
                x, state[f"{prefix}._depthwise_conv.weight"], stride=stride, groups=x.shape[0]
            )
            x = relu6(batch_norm(x, state, f"{prefix}._bn1"))
            x = batch_norm(
                conv2d(x, state[f"{prefix}._project_conv.weight"], stride=1),
                state,
                f"{prefix}._bn2",
            )
            # PyTorch keeps the first block's stride as a list, so only repeats take the skip;
            # they are exactly the blocks with stride 1 and equal widths.
            if repeat > 0 and stride == 1 and inputs_filters == args["out"]:
                x = x + inputs
            index += 1
    x = relu6(batch_norm(conv2d(x, state["_conv_head.weight"], stride=1), state, "_bn1"))
    pooled = x.mean(axis=(1, 2))
    return state["_fc.weight"] @ pooled + state["_fc.bias"]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()

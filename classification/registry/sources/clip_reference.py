"""CLIP's forward pass in plain NumPy, read straight from a Hugging Face ``CLIPModel`` checkpoint.

Written from the checkpoint's own names and semantics (PyTorch layouts: Linear weights
[out, in], the patch convolution [out, in, kh, kw]), sharing nothing with the KerasHub weight
mapping it checks. Computed in float64: it is the yardstick, not a runtime.

Both towers are pre-norm transformers with quick_gelu MLPs. The image tower embeds 'patch'-sized
patches with the convolution, puts the class embedding first, adds position embeddings, applies
``pre_layrnorm``, the blocks, ``post_layernorm`` on the class token, then ``visual_projection``.
The text tower adds token and position embeddings, runs the blocks under a causal mask, applies
``final_layer_norm`` and takes the hidden state at the end token (the largest id, as OpenAI's
CLIP does), then ``text_projection``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TowerShape:
    """What a tower's config says and its tensors do not: heads and the norms' epsilon."""

    num_heads: int
    layer_norm_eps: float
    num_layers: int


def _w(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(tensors[name], dtype=np.float64)


def _layer_norm(x: np.ndarray, tensors: dict, prefix: str, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed = (x - mean) / np.sqrt(variance + eps)
    return normed * _w(tensors, f"{prefix}.weight") + _w(tensors, f"{prefix}.bias")


def _linear(x: np.ndarray, tensors: dict, prefix: str, *, bias: bool = True) -> np.ndarray:
    out = x @ _w(tensors, f"{prefix}.weight").T
    return out + _w(tensors, f"{prefix}.bias") if bias else out


def _quick_gelu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-1.702 * x))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _attention(x: np.ndarray, tensors: dict, prefix: str, heads: int, causal: bool) -> np.ndarray:
    batch, length, width = x.shape
    head_dim = width // heads

    def split(projected: np.ndarray) -> np.ndarray:
        return projected.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

    query = split(_linear(x, tensors, f"{prefix}.q_proj")) * head_dim**-0.5
    key = split(_linear(x, tensors, f"{prefix}.k_proj"))
    value = split(_linear(x, tensors, f"{prefix}.v_proj"))
    scores = query @ key.transpose(0, 1, 3, 2)
    if causal:
        scores = np.where(np.tril(np.ones((length, length), dtype=bool)), scores, -np.inf)
    mixed = (_softmax(scores) @ value).transpose(0, 2, 1, 3).reshape(batch, length, width)
    return _linear(mixed, tensors, f"{prefix}.out_proj")


def _encoder(x: np.ndarray, tensors: dict, prefix: str, shape: TowerShape, causal: bool):
    for index in range(shape.num_layers):
        layer = f"{prefix}.encoder.layers.{index}"
        eps = shape.layer_norm_eps
        normed = _layer_norm(x, tensors, f"{layer}.layer_norm1", eps)
        x = x + _attention(normed, tensors, f"{layer}.self_attn", shape.num_heads, causal)
        normed = _layer_norm(x, tensors, f"{layer}.layer_norm2", eps)
        hidden = _quick_gelu(_linear(normed, tensors, f"{layer}.mlp.fc1"))
        x = x + _linear(hidden, tensors, f"{layer}.mlp.fc2")
    return x


def reference_image_embeddings(
    *, tensors: dict[str, np.ndarray], shape: TowerShape, images: np.ndarray
) -> np.ndarray:
    """Projected image embeddings (unnormalised) of ``images``, (N, H, W, 3) as served."""
    pixels = np.asarray(images, dtype=np.float64).transpose(0, 3, 1, 2)  # PyTorch's NCHW
    batch, channels, height, width = pixels.shape
    kernel = _w(tensors, "vision_model.embeddings.patch_embedding.weight")
    out_channels, _in, patch, _ = kernel.shape
    rows, cols = height // patch, width // patch
    patches = (
        pixels[:, :, : rows * patch, : cols * patch]
        .reshape(batch, channels, rows, patch, cols, patch)
        .transpose(0, 2, 4, 1, 3, 5)  # (batch, row, col, channel, kh, kw), as the kernel
        .reshape(batch, rows * cols, channels * patch * patch)
    )
    embedded = patches @ kernel.reshape(out_channels, -1).T
    cls = np.broadcast_to(
        _w(tensors, "vision_model.embeddings.class_embedding"), (batch, 1, out_channels)
    )
    x = np.concatenate([cls, embedded], axis=1)
    positions = _w(tensors, "vision_model.embeddings.position_embedding.weight")
    x = x + positions[: x.shape[1]]
    x = _layer_norm(x, tensors, "vision_model.pre_layrnorm", shape.layer_norm_eps)
    x = _encoder(x, tensors, "vision_model", shape, causal=False)
    pooled = _layer_norm(x[:, 0], tensors, "vision_model.post_layernorm", shape.layer_norm_eps)
    return _linear(pooled, tensors, "visual_projection", bias=False)


def reference_text_embeddings(
    *, tensors: dict[str, np.ndarray], shape: TowerShape, token_ids: np.ndarray
) -> np.ndarray:
    """Projected text embeddings (unnormalised) of packed ``token_ids``, (N, length)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    tokens = _w(tensors, "text_model.embeddings.token_embedding.weight")[ids]
    positions = _w(tensors, "text_model.embeddings.position_embedding.weight")
    x = tokens + positions[: ids.shape[1]]
    x = _encoder(x, tensors, "text_model", shape, causal=True)
    x = _layer_norm(x, tensors, "text_model.final_layer_norm", shape.layer_norm_eps)
    pooled = x[np.arange(ids.shape[0]), ids.argmax(axis=-1)]
    return _linear(pooled, tensors, "text_projection", bias=False)

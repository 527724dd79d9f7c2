"""A CLIP from the Hugging Face hub (``transformers``' ``CLIPModel`` format), without PyTorch.

``config.json`` gives the architecture (HF's key names, HF's defaults where a key is left
out), ``model.safetensors`` the weights, read with the ``safetensors`` package's NumPy API,
``vocab.json`` and ``merges.txt`` the BPE vocabulary. The weights are mapped onto KerasHub's
``CLIPBackbone``: every tensor in the file fills exactly one Keras weight and every Keras weight
is filled, or nothing is registered. Before the model goes to the registration pipeline of
``classification.registry.clip`` (LiteRT conversion and parity checks), the mapped Keras model
must agree with an independent NumPy forward pass of the checkpoint (``clip_reference``).
"""

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classification.exceptions import ModelRegistrationError
from classification.models import ModelVersion
from classification.registry.clip import (
    DEFAULT_TEMPLATE,
    ClipCheckpoint,
    cifar100_labels,
    zero_shot_register,
)
from classification.registry.services import PARITY_TOLERANCE
from classification.registry.sources.clip_reference import (
    TowerShape,
    reference_image_embeddings,
    reference_text_embeddings,
)
from classification.registry.sources.hf_hub import ProgressStream, hub_files_download
from classification.serving.zero_shot import CONTEXT_LENGTH, END_TOKEN, ClipTokenizer

logger = logging.getLogger(__name__)

DEFAULT_REPO = "openai/clip-vit-base-patch32"
HF_CLIP_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
# How many prompts and random images the reference forward pass checks (it is slow: float64).
REFERENCE_PROMPTS = 3
REFERENCE_IMAGES = 2

# transformers' CLIPTextConfig and CLIPVisionConfig defaults, for keys a config.json omits.
_TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


@dataclass(frozen=True)
class HfClipConfig:
    """The architecture a hub ``config.json`` describes."""

    text: dict[str, Any]
    vision: dict[str, Any]
    projection_dim: int

    def tower(self, which: str) -> TowerShape:
        part = self.text if which == "text" else self.vision
        return TowerShape(
            num_heads=int(part["num_attention_heads"]),
            layer_norm_eps=float(part["layer_norm_eps"]),
            num_layers=int(part["num_hidden_layers"]),
        )


def hf_clip_config(data: object) -> HfClipConfig:
    """Read a ``CLIPModel`` config.json. Raises ModelRegistrationError for another model."""
    if not isinstance(data, dict) or data.get("model_type") not in (None, "clip"):
        kind = data.get("model_type") if isinstance(data, dict) else None
        raise ModelRegistrationError(f"config.json is not a CLIP config (model_type {kind!r}).")
    # Configs written by old transformers versions may keep the towers under *_config_dict.
    text = {**_TEXT_DEFAULTS, **(data.get("text_config") or data.get("text_config_dict") or {})}
    vision = {
        **_VISION_DEFAULTS,
        **(data.get("vision_config") or data.get("vision_config_dict") or {}),
    }
    for tower, part in (("text", text), ("vision", vision)):
        if part["hidden_act"] != "quick_gelu":
            raise ModelRegistrationError(
                f"The {tower} tower uses {part['hidden_act']!r}; only quick_gelu CLIPs "
                "(OpenAI's) map onto KerasHub's CLIPBackbone here."
            )
    if int(text["max_position_embeddings"]) != CONTEXT_LENGTH:
        raise ModelRegistrationError(
            f"The text tower takes {text['max_position_embeddings']} tokens; serving packs "
            f"prompts to {CONTEXT_LENGTH}."
        )
    if int(vision["num_channels"]) != 3:
        raise ModelRegistrationError("The image tower does not take RGB images.")
    return HfClipConfig(
        text=text, vision=vision, projection_dim=int(data.get("projection_dim", 512))
    )


def hf_clip_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as NumPy arrays (float tensors as float32)."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # the library raises its own error types for a bad file
        raise ModelRegistrationError(f"Cannot read {path.name} as safetensors: {exc}") from exc
    return {
        name: tensor.astype(np.float32, copy=False)
        if np.issubdtype(tensor.dtype, np.floating)
        else tensor
        for name, tensor in tensors.items()
    }


# --- The weight mapping: HF CLIPModel names -> KerasHub CLIPBackbone weights -----------------
# A transform takes the HF tensor and the Keras weight's shape and returns the Keras value.
Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


def _same(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return tensor


def _dense(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return tensor.T  # Linear [out, in] -> Dense kernel [in, out]


def _heads(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # Linear [heads * head_dim, in] -> EinsumDense [in, heads, head_dim]; biases to [heads,
    # head_dim]; the output Linear [out, heads * head_dim] -> [heads, head_dim, out].
    value = tensor if tensor.ndim == 1 else tensor.T
    if value.size != int(np.prod(shape)):
        return value  # the shape check names the mismatch
    return value.reshape(shape)


def _conv(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return tensor.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]


# Within encoder layer i: HF "<tower>.encoder.layers.{i}.<name>" -> Keras "encoder_block_{i}/..."
BLOCK_WEIGHTS: dict[str, tuple[str, Transform]] = {
    "layer_norm1.weight": ("layer_norm_1/gamma", _same),
    "layer_norm1.bias": ("layer_norm_1/beta", _same),
    "self_attn.q_proj.weight": ("attention/query/kernel", _heads),
    "self_attn.q_proj.bias": ("attention/query/bias", _heads),
    "self_attn.k_proj.weight": ("attention/key/kernel", _heads),
    "self_attn.k_proj.bias": ("attention/key/bias", _heads),
    "self_attn.v_proj.weight": ("attention/value/kernel", _heads),
    "self_attn.v_proj.bias": ("attention/value/bias", _heads),
    "self_attn.out_proj.weight": ("attention/attention_output/kernel", _heads),
    "self_attn.out_proj.bias": ("attention/attention_output/bias", _same),
    "layer_norm2.weight": ("layer_norm_2/gamma", _same),
    "layer_norm2.bias": ("layer_norm_2/beta", _same),
    "mlp.fc1.weight": ("dense_1/kernel", _dense),
    "mlp.fc1.bias": ("dense_1/bias", _same),
    "mlp.fc2.weight": ("dense_2/kernel", _dense),
    "mlp.fc2.bias": ("dense_2/bias", _same),
}
VISION_WEIGHTS: dict[str, tuple[str, Transform]] = {
    "vision_model.embeddings.class_embedding": ("embedding/class_embedding", _same),
    "vision_model.embeddings.patch_embedding.weight": ("embedding/patch_embedding/kernel", _conv),
    "vision_model.embeddings.position_embedding.weight": (
        "embedding/position_embedding/embeddings",
        _same,
    ),
    "vision_model.pre_layrnorm.weight": ("pre_layer_norm/gamma", _same),
    "vision_model.pre_layrnorm.bias": ("pre_layer_norm/beta", _same),
    "vision_model.post_layernorm.weight": ("layer_norm/gamma", _same),
    "vision_model.post_layernorm.bias": ("layer_norm/beta", _same),
}
TEXT_WEIGHTS: dict[str, tuple[str, Transform]] = {
    "text_model.embeddings.token_embedding.weight": ("embedding/token_embedding/embeddings", _same),
    "text_model.embeddings.position_embedding.weight": (
        "embedding/position_embedding/embeddings",
        _same,
    ),
    "text_model.final_layer_norm.weight": ("layer_norm/gamma", _same),
    "text_model.final_layer_norm.bias": ("layer_norm/beta", _same),
}
HEAD_WEIGHTS: dict[str, tuple[str, Transform]] = {
    "visual_projection.weight": ("vision_projection/kernel", _dense),
    "text_projection.weight": ("text_projection/kernel", _dense),
    "logit_scale": ("clip_head/logit_scale", _same),
}
# Buffers older checkpoints saved: the positions 0..n-1, checked and then used as such.
POSITION_IDS = {
    "vision": "vision_model.embeddings.position_ids",
    "text": "text_model.embeddings.position_ids",
}


def _tower_mapping(
    prefix: str, weights: dict[str, tuple[str, Transform]], layers: int
) -> Iterator[tuple[str, str, Transform]]:
    for name, (path, transform) in weights.items():
        yield name, path, transform
    for index in range(layers):
        for name, (path, transform) in BLOCK_WEIGHTS.items():
            yield (
                f"{prefix}.encoder.layers.{index}.{name}",
                f"encoder_block_{index}/{path}",
                transform,
            )


def _keras_hub() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras_hub

    return keras_hub


def hf_clip_backbone_build(config: HfClipConfig) -> Any:
    """KerasHub's CLIPBackbone shaped as ``config`` says, with its layer norms' epsilon."""
    keras_hub = _keras_hub()
    vision, text = config.vision, config.text
    size = int(vision["image_size"])
    vision_encoder = keras_hub.models.CLIPVisionEncoder(
        patch_size=int(vision["patch_size"]),
        hidden_dim=int(vision["hidden_size"]),
        num_layers=int(vision["num_hidden_layers"]),
        num_heads=int(vision["num_attention_heads"]),
        intermediate_dim=int(vision["intermediate_size"]),
        intermediate_activation="quick_gelu",
        image_shape=(size, size, 3),
    )
    text_encoder = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=int(text["vocab_size"]),
        embedding_dim=int(text["hidden_size"]),
        hidden_dim=int(text["hidden_size"]),
        num_layers=int(text["num_hidden_layers"]),
        num_heads=int(text["num_attention_heads"]),
        intermediate_dim=int(text["intermediate_size"]),
        intermediate_activation="quick_gelu",
        max_sequence_length=int(text["max_position_embeddings"]),
    )
    backbone = keras_hub.models.CLIPBackbone(
        vision_encoder=vision_encoder,
        text_encoder=text_encoder,
        projection_dim=config.projection_dim,
    )
    # KerasHub fixes its norms' epsilon (1e-5, and 1e-6 for the text tower's last); the
    # checkpoint was trained with its config's. (A saved .keras reloads with KerasHub's.)
    for encoder, eps in (
        (vision_encoder, vision["layer_norm_eps"]),
        (text_encoder, text["layer_norm_eps"]),
    ):
        norms = [encoder.layer_norm]
        if hasattr(encoder, "pre_layer_norm"):  # the image tower's
            norms.append(encoder.pre_layer_norm)
        for block in encoder.encoder_layers:
            norms += [block.layer_norm_1, block.layer_norm_2]
        for norm in norms:
            norm.epsilon = float(eps)
    return backbone


def hf_clip_weights_assign(*, backbone: Any, config: HfClipConfig, tensors: dict) -> None:
    """Fill ``backbone`` from the checkpoint's ``tensors``, each used exactly once.

    Raises ModelRegistrationError naming any tensor left over, missing or of the wrong shape,
    and any Keras weight left unfilled.
    """
    unused = dict(tensors)
    targets: list[tuple[str, str, Transform, Any]] = []
    towers = (
        ("vision", "vision_model", VISION_WEIGHTS, backbone.vision_encoder),
        ("text", "text_model", TEXT_WEIGHTS, backbone.text_encoder),
    )
    for which, prefix, weights, encoder in towers:
        variables = {variable.path: variable for variable in encoder.weights}
        layers = config.tower(which).num_layers
        for name, path, transform in _tower_mapping(prefix, weights, layers):
            targets.append((name, f"{which}:{path}", transform, variables.pop(path, None)))
        positions = variables.pop("embedding/position_ids", None)
        rows = tensors.get(f"{prefix}.embeddings.position_embedding.weight")
        count = 0 if rows is None else int(rows.shape[0])
        buffer = unused.pop(POSITION_IDS[which], None)
        if buffer is not None and not np.array_equal(np.ravel(buffer), np.arange(count)):
            raise ModelRegistrationError(f"{POSITION_IDS[which]} is not 0..{count - 1}.")
        if positions is not None:  # KerasHub creates it as zeros: set 0..n-1
            positions.assign(np.arange(positions.shape[-1], dtype=np.int64)[None])
        if variables:
            raise ModelRegistrationError(
                f"KerasHub's {which} encoder has weights the mapping does not fill: "
                f"{', '.join(sorted(variables))}."
            )
    heads = {
        "vision_projection/kernel": backbone.vision_projection.kernel,
        "text_projection/kernel": backbone.text_projection.kernel,
        "clip_head/logit_scale": backbone.clip_head.logit_scale,
    }
    for name, (path, transform) in HEAD_WEIGHTS.items():
        targets.append((name, path, transform, heads[path]))

    missing = [name for name, *_rest in targets if name not in unused]
    if missing:
        raise ModelRegistrationError(
            f"model.safetensors lacks {len(missing)} tensor(s) a CLIPModel has: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}."
        )
    for name, path, transform, variable in targets:
        if variable is None:
            raise ModelRegistrationError(f"KerasHub's CLIPBackbone has no weight {path}.")
        shape = tuple(int(d) for d in variable.shape)
        value = transform(unused.pop(name), shape)
        if tuple(value.shape) != shape:
            raise ModelRegistrationError(
                f"{name} maps to shape {tuple(value.shape)}; KerasHub's {path} is {shape}."
            )
        variable.assign(value.astype(np.float32))
    if unused:
        names = sorted(unused)
        raise ModelRegistrationError(
            f"model.safetensors has {len(names)} tensor(s) the mapping does not use: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}; refusing a partial model."
        )


def hf_clip_vocabulary(*, vocab_path: Path, merges_path: Path) -> tuple[dict[str, int], list[str]]:
    """vocab.json and merges.txt (its ``#version`` line dropped). Raises ModelRegistrationError."""
    try:
        vocabulary = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise ModelRegistrationError(f"Cannot read the vocabulary: {exc}") from exc
    if not isinstance(vocabulary, dict) or sorted(vocabulary.values()) != list(
        range(len(vocabulary))
    ):
        raise ModelRegistrationError("vocab.json does not number its tokens 0..n-1.")
    merges = [line for line in lines if line.strip() and not line.startswith("#version")]
    if any(len(merge.split()) != 2 for merge in merges):
        raise ModelRegistrationError("merges.txt has a line that is not two symbols.")
    # The text pooler takes the position of the largest id: that must be the end token.
    if vocabulary.get(END_TOKEN) != len(vocabulary) - 1:
        raise ModelRegistrationError(f"{END_TOKEN} is not the last token of vocab.json.")
    return vocabulary, merges


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def hf_clip_reference_check(
    *,
    checkpoint: ClipCheckpoint,
    config: HfClipConfig,
    tensors: dict[str, np.ndarray],
    prompts: list[str],
    tolerance: float = PARITY_TOLERANCE,
) -> dict[str, float]:
    """The mapped Keras model against the NumPy reference: the largest differences of the
    normalised embeddings, image (random standardised images) and text (``prompts``).

    Raises ModelRegistrationError when either reaches ``tolerance``: the mapping is wrong.
    """
    import keras

    backbone = checkpoint.backbone
    size = checkpoint.input_size
    images = np.random.default_rng(1).standard_normal((REFERENCE_IMAGES, size, size, 3))
    images = images.astype(np.float32)
    tokenizer = ClipTokenizer(vocabulary=checkpoint.vocabulary, merges=checkpoint.merges)
    token_ids = np.concatenate(
        [
            tokenizer.pack(tokenizer.tokenize(prompt), pad_token_id=checkpoint.pad_token_id)
            for prompt in prompts
        ]
    )
    keras_images = np.asarray(backbone.get_vision_embeddings(keras.ops.convert_to_tensor(images)))
    keras_texts = np.asarray(backbone.get_text_embeddings(keras.ops.convert_to_tensor(token_ids)))
    image_diff = float(
        np.abs(
            _normalised(keras_images.astype(np.float64))
            - _normalised(
                reference_image_embeddings(
                    tensors=tensors, shape=config.tower("vision"), images=images
                )
            )
        ).max()
    )
    text_diff = float(
        np.abs(
            _normalised(keras_texts.astype(np.float64))
            - _normalised(
                reference_text_embeddings(
                    tensors=tensors, shape=config.tower("text"), token_ids=token_ids
                )
            )
        ).max()
    )
    for what, diff in (("image", image_diff), ("text", text_diff)):
        if not diff < tolerance:
            raise ModelRegistrationError(
                f"The Keras model built from the checkpoint disagrees with the NumPy reference "
                f"forward pass by {diff:.2e} on the {what} embeddings (the limit is "
                f"{tolerance:.0e}): the weight mapping is wrong; the model was not registered."
            )
    return {"reference_max_abs_diff": image_diff, "text_reference_max_abs_diff": text_diff}


@dataclass(frozen=True)
class HfClip:
    checkpoint: ClipCheckpoint
    config: HfClipConfig
    tensors: dict[str, np.ndarray]


def hf_clip_load(*, files: dict[str, Path]) -> HfClip:
    """A ClipCheckpoint from the four hub files (HF_CLIP_FILES -> path). Raises
    ModelRegistrationError."""
    try:
        config = hf_clip_config(json.loads(files["config.json"].read_text(encoding="utf-8")))
    except (TypeError, ValueError) as exc:  # not JSON, or a value of the wrong type
        raise ModelRegistrationError(f"config.json cannot be read as a CLIP config: {exc}") from exc
    tensors = hf_clip_tensors(files["model.safetensors"])
    vocabulary, merges = hf_clip_vocabulary(
        vocab_path=files["vocab.json"], merges_path=files["merges.txt"]
    )
    if len(vocabulary) != int(config.text["vocab_size"]):
        raise ModelRegistrationError(
            f"vocab.json has {len(vocabulary)} tokens; config.json says "
            f"{config.text['vocab_size']}."
        )
    backbone = hf_clip_backbone_build(config)
    hf_clip_weights_assign(backbone=backbone, config=config, tensors=tensors)
    keras_tokenizer = _keras_hub().models.CLIPTokenizer(vocabulary=vocabulary, merges=merges)
    checkpoint = ClipCheckpoint(
        backbone=backbone,
        vocabulary=vocabulary,
        merges=merges,
        pad_token_id=int(keras_tokenizer.pad_token_id),
        keras_tokenizer=keras_tokenizer,
    )
    return HfClip(checkpoint=checkpoint, config=config, tensors=tensors)


def hf_clip_register(
    *,
    repo: str = DEFAULT_REPO,
    revision: str = "main",
    name: str,
    labels: list[str] | None = None,
    template: str = DEFAULT_TEMPLATE,
    stage: str = ModelVersion.Stage.STAGING,
    progress: ProgressStream | None = sys.stderr,
    tolerance: float = PARITY_TOLERANCE,
) -> ModelVersion:
    """Download ``repo`` at ``revision`` from the hub and register it as a zero-shot version.

    ``labels`` default to the 100 CIFAR-100 classes. The version's source names the repository
    and the commit the revision resolved to; its metrics add the NumPy reference differences.
    Raises ModelRegistrationError (offline, checksum, mapping, reference or parity failures:
    nothing is registered then).
    """
    labels = cifar100_labels() if labels is None else labels
    if not labels:
        raise ModelRegistrationError("A zero-shot model needs at least one label.")
    listed, files = hub_files_download(
        repo=repo, revision=revision, names=HF_CLIP_FILES, progress=progress
    )
    loaded = hf_clip_load(files=files)
    prompts = [template.replace("{}", label.strip()) for label in labels[:REFERENCE_PROMPTS]]
    reference = hf_clip_reference_check(
        checkpoint=loaded.checkpoint,
        config=loaded.config,
        tensors=loaded.tensors,
        prompts=prompts,
        tolerance=tolerance,
    )
    logger.info(
        "%s at %s agrees with the NumPy reference: %.1e (image), %.1e (text)",
        repo,
        listed.commit,
        reference["reference_max_abs_diff"],
        reference["text_reference_max_abs_diff"],
    )
    checkpoint = loaded.checkpoint
    del loaded  # the NumPy copy of the weights (605 MB for ViT-B/32) is not needed past here
    weights = listed.files["model.safetensors"]
    return zero_shot_register(
        checkpoint=checkpoint,
        name=name,
        labels=labels,
        template=template,
        stage=stage,
        source=(
            f"Hugging Face {repo} at commit {listed.commit} (revision {revision!r}; "
            f"model.safetensors {weights.size} bytes, "
            f"{'SHA-256' if weights.lfs_sha256 else 'git blob'} {weights.checksum})"
        )[:500],
        tolerance=tolerance,
        metrics={**reference, "hf_repo": repo, "hf_commit": listed.commit},
    )

"""A tiny real CLIP built and trained here (KerasHub, no downloads): a demo, tests, benchmarks.

Product code on purpose: no real CLIP weights can be had offline, so ``fetch_model tiny-clip``
(a user's zero-shot demo), the tests and ``make bench`` (``python -m bench zero_shot``) all
register this one to exercise the real zero-shot path.

Patch 16 over 32 x 32 images, 64 dimensions, 2 layers per tower (~0.24 M parameters), and a
byte-level BPE vocabulary of its own: the 512 byte symbols CLIP's vocabulary starts with, the
merges that spell the training prompts' words, and the two special tokens last (CLIP's text
pooler takes the position of the largest id, the end token). A few hundred Adam steps on red,
green and blue squares against "a photo of a red square" ... give its prompts meaning.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from classification.models import ModelVersion
from classification.registry.clip import CLIP_PREPROCESSING, zero_shot_register
from classification.serving.imaging import image_preprocess
from classification.serving.zero_shot import (
    END_TOKEN,
    START_TOKEN,
    ClipTokenizer,
    _byte_to_unicode,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_CLIP_SIZE = 32
TINY_CLIP_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
TINY_CLIP_LABELS = [f"{colour} square" for colour in TINY_CLIP_COLOURS]
TINY_CLIP_TEMPLATE = "a photo of a {}"
# Words the vocabulary spells in one token each (more than the prompts, for extra labels).
_WORDS = ["a", "photo", "of", "red", "green", "blue", "square", "cat", "dog", "bicycle"]


def tiny_vocabulary() -> tuple[dict[str, int], list[str]]:
    """CLIP-style vocabulary and merges covering every byte, with whole-word tokens for _WORDS."""
    symbols = list(_byte_to_unicode().values())
    vocabulary = {symbol: index for index, symbol in enumerate(symbols)}
    for symbol in symbols:
        vocabulary[symbol + "</w>"] = len(vocabulary)
    merges: list[str] = []
    for word in _WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            token = merged + part
            if token not in vocabulary:
                merges.append(f"{merged} {part}")
                vocabulary[token] = len(vocabulary)
            merged = token
    vocabulary[START_TOKEN] = len(vocabulary)
    vocabulary[END_TOKEN] = len(vocabulary)
    return vocabulary, merges


def square_image(colour: str, *, size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    """A square of ``colour`` on a grey, slightly noisy background, placed at random."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(110, 150, size=(height, width, 3)).astype(np.uint8)
    side = int(min(width, height) * rng.uniform(0.45, 0.7))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    pixels[top : top + side, left : left + side] = TINY_CLIP_COLOURS[colour]
    return Image.fromarray(pixels)


def build_tiny_clip_preset(
    path: Path, *, steps: int = 150, seed: int = 3, learning_rate: float = 3e-3
) -> Path:
    """Build, train and save a tiny CLIP as a KerasHub preset folder at ``path``."""
    # Here, not at the top: KerasHub and TensorFlow stay out of serving processes.
    import keras
    import keras_hub
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    vocabulary, merges = tiny_vocabulary()
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=16,
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        intermediate_dim=128,
        image_shape=(TINY_CLIP_SIZE, TINY_CLIP_SIZE, 3),
    )
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=len(vocabulary),
        embedding_dim=64,
        hidden_dim=64,
        num_layers=2,
        num_heads=2,
        intermediate_dim=128,
    )
    backbone = keras_hub.models.CLIPBackbone(
        vision_encoder=vision, text_encoder=text, projection_dim=64
    )
    tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=vocabulary, merges=merges)
    ours = ClipTokenizer(vocabulary=vocabulary, merges=merges)
    prompts = [TINY_CLIP_TEMPLATE.format(label) for label in TINY_CLIP_LABELS]
    token_ids = tf.constant(
        np.concatenate(
            [
                ours.pack(ours.tokenize(prompt), pad_token_id=tokenizer.pad_token_id)
                for prompt in prompts
            ]
        )
    )

    colours = list(TINY_CLIP_COLOURS)
    rng = np.random.default_rng(seed)
    # One fixed set of squares, of many sizes and places, preprocessed as serving will.
    classes = np.arange(96) % len(colours)
    images = np.concatenate(
        [
            image_preprocess(
                image=square_image(
                    colours[c],
                    size=(int(rng.integers(32, 64)), int(rng.integers(32, 64))),
                    seed=seed * 1000 + i,
                ),
                input_size=TINY_CLIP_SIZE,
                preprocessing=CLIP_PREPROCESSING,
            )
            for i, c in enumerate(classes)
        ]
    )
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    variables = backbone.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_step(images: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            outputs = backbone({"images": images, "token_ids": token_ids}, training=True)
            loss = keras.ops.mean(
                keras.losses.sparse_categorical_crossentropy(
                    classes, outputs["vision_logits"], from_logits=True
                )
            )
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    for _step in range(steps):
        chosen = rng.choice(len(classes), size=32, replace=False)
        train_step(tf.constant(images[chosen]), tf.constant(classes[chosen]))
    path.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(path))
    tokenizer.save_to_preset(str(path))
    return path


def tiny_clip_register(
    *, name: str, stage: str = ModelVersion.Stage.STAGING, source: str = ""
) -> ModelVersion:
    """Build and train the tiny CLIP (a few seconds), then register it as the next version of
    ``name`` with its three colour labels. Raises ModelRegistrationError as zero_shot_register."""
    with tempfile.TemporaryDirectory() as workdir:
        preset = build_tiny_clip_preset(Path(workdir) / "preset")
        return zero_shot_register(
            preset=str(preset),
            name=name,
            labels=TINY_CLIP_LABELS,
            template=TINY_CLIP_TEMPLATE,
            stage=stage,
            source=source or "a tiny CLIP trained here on coloured squares (tiny_clip.py)",
        )

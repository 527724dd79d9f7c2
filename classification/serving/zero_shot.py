"""The ``zero_shot`` kind: a CLIP image encoder compared with text embeddings of label prompts.

A zero-shot version serves two LiteRT flat buffers, the image encoder (the version's
``artifact``) and the text encoder, plus the L2-normalised text embeddings of its registration
labels' prompts, CLIP's BPE vocabulary and merges, the prompt template and the logit scale. The
version's ``zero_shot`` field records them (``zero_shot_spec`` below reads it):

    {"template": "a photo of a {}", "logit_scale": 100.0, "context_length": 77,
     "start_token_id": 49406, "end_token_id": 49407, "pad_token_id": 0,
     "embedding_dim": 512,
     "text_encoder": {"artifact": "<store name>", "sha256": "<hex>"},
     "vocabulary": {...}, "merges": {...}, "label_embeddings": {...}}

Scores: softmax over labels of logit_scale * cosine(image embedding, prompt embedding).
Per-request labels are tokenised here, in pure Python (no TensorFlow, no KerasHub), embedded
with the text encoder and remembered per version and label text: in the worker's memory, and
with Redis in the shared cache too, so that a label one worker encoded costs the others one
lookup instead of a text encoder run.
"""

import base64
import binascii
import hashlib
import io
import json
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import regex
from django.conf import settings

from classification.caching import get_result_cache
from classification.exceptions import InvalidClassificationRequest, ModelRegistrationError
from classification.models import ModelVersion
from classification.serving.litert import LiteRTClassifier, softmax
from classification.store import artifact_read_verified

# CLIP's text context: every prompt is packed to this many token ids, start and end included.
CONTEXT_LENGTH = 77
START_TOKEN = "<|startoftext|>"  # noqa: S105 (a vocabulary entry, not a secret)
END_TOKEN = "<|endoftext|>"  # noqa: S105

# Label embeddings remembered per version (a few KB each for ViT-B/32's 512 floats).
LABEL_EMBEDDINGS_CACHED = 10_000

# KerasHub's CLIPTokenizer split (its `tokenizers` path, which matches its TensorFlow path):
# the special tokens, English contractions, letter runs, single digits, other non-space runs.
_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_WHITESPACE = regex.compile(r"\s+")


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which CLIP's vocabulary uses."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


class ClipTokenizer:
    """CLIP's byte-level BPE, equal to KerasHub's ``CLIPTokenizer`` on the same vocabulary.

    Text is NFC-normalised by Python's ``unicodedata`` as KerasHub does, whitespace runs become
    one space, everything is lower-cased, split as ``_SPLIT`` says, and each piece is encoded
    as bytes and merged by rank with ``</w>`` marking the end of a word.
    """

    def __init__(self, *, vocabulary: dict[str, int], merges: list[str]) -> None:
        self.vocabulary = vocabulary
        ranks: dict[tuple[str, str], int] = {}
        for line in merges:
            if not line.strip() or line.startswith("#version"):
                continue
            first, second = line.split()
            ranks[(first, second)] = len(ranks)
        self._ranks = ranks
        self._words: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        try:
            self.start_token_id = vocabulary[START_TOKEN]
            self.end_token_id = vocabulary[END_TOKEN]
        except KeyError as exc:
            raise ModelRegistrationError(f"The vocabulary has no {exc.args[0]} token.") from exc

    def _bpe(self, piece: str) -> list[int]:
        cached = self._words.get(piece)
        if cached is not None:
            return cached
        if piece in (START_TOKEN, END_TOKEN):
            ids = [self.vocabulary[piece]]
        else:
            mapping = _byte_to_unicode()
            symbols = [mapping[byte] for byte in piece.encode("utf-8")]
            symbols[-1] += "</w>"
            while len(symbols) > 1:
                pairs = [(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)]
                best = min(pairs, key=lambda pair: self._ranks.get(pair, len(self._ranks)))
                if best not in self._ranks:
                    break
                merged: list[str] = []
                i = 0
                while i < len(symbols):
                    if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                        merged.append(symbols[i] + symbols[i + 1])
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
            # A symbol outside the vocabulary becomes the end token, as KerasHub's unk_token.
            ids = [self.vocabulary.get(symbol, self.end_token_id) for symbol in symbols]
        with self._lock:
            if len(self._words) < 100_000:  # bounded: labels come from clients
                self._words[piece] = ids
        return ids

    def tokenize(self, text: str) -> list[int]:
        """The BPE token ids of ``text``, without start and end tokens, untruncated."""
        text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).lower()
        ids: list[int] = []
        for piece in _SPLIT.findall(text):
            ids.extend(self._bpe(piece))
        return ids

    def pack(self, ids: list[int], *, pad_token_id: int) -> np.ndarray:
        """Start, the ids truncated to fit, end, then padding: (1, CONTEXT_LENGTH) int32."""
        kept = ids[: CONTEXT_LENGTH - 2]
        packed = [self.start_token_id, *kept, self.end_token_id]
        packed += [pad_token_id] * (CONTEXT_LENGTH - len(packed))
        return np.asarray([packed], dtype=np.int32)


@dataclass(frozen=True)
class StoredFile:
    artifact: str
    sha256: str

    def read(self) -> bytes:
        return artifact_read_verified(name=self.artifact, sha256=self.sha256)


@dataclass(frozen=True)
class ZeroShotSpec:
    """A zero-shot version's ``zero_shot`` field, read and typed."""

    template: str
    logit_scale: float
    pad_token_id: int
    embedding_dim: int
    text_encoder: StoredFile
    vocabulary: StoredFile
    merges: StoredFile
    label_embeddings: StoredFile

    def prompt(self, label: str) -> str:
        return self.template.replace("{}", label)


def zero_shot_spec(model_version: ModelVersion) -> ZeroShotSpec:
    """The typed text side of ``model_version``. Raises ModelRegistrationError when malformed."""
    spec = model_version.zero_shot
    try:
        assert isinstance(spec, dict)
        return ZeroShotSpec(
            template=str(spec["template"]),
            logit_scale=float(spec["logit_scale"]),
            pad_token_id=int(spec["pad_token_id"]),
            embedding_dim=int(spec["embedding_dim"]),
            **{
                part: StoredFile(artifact=spec[part]["artifact"], sha256=spec[part]["sha256"])
                for part in ("text_encoder", "vocabulary", "merges", "label_embeddings")
            },
        )
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise ModelRegistrationError(f"{model_version} has no valid zero-shot record.") from exc


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


class ZeroShotServable:
    """The ``zero_shot`` kind, loaded: image encoder, text encoder, tokenizer, label embeddings."""

    def __init__(self, *, model_version: ModelVersion, content: bytes) -> None:
        self.name = model_version.name
        self.spec = spec = zero_shot_spec(model_version)
        threads = settings.LITERT_NUM_THREADS
        self.interpreter = LiteRTClassifier(model_content=content, num_threads=threads)
        self.text_interpreter = LiteRTClassifier(
            model_content=spec.text_encoder.read(), num_threads=threads
        )
        self.tokenizer = ClipTokenizer(
            vocabulary=json.loads(spec.vocabulary.read()),
            merges=spec.merges.read().decode("utf-8").splitlines(),
        )
        embeddings = np.load(io.BytesIO(spec.label_embeddings.read()), allow_pickle=False)
        self.label_embeddings = np.asarray(embeddings, dtype=np.float32)
        self.input_size = size = model_version.input_size
        dim, labels = spec.embedding_dim, len(model_version.labels)
        if (
            self.interpreter.input_shape != (1, size, size, 3)
            or self.interpreter.output_size != dim
            or self.text_interpreter.input_shape != (1, CONTEXT_LENGTH)
            or self.text_interpreter.output_size != dim
            or self.label_embeddings.shape != (labels, dim)
        ):
            raise ModelRegistrationError(
                f"{model_version}'s encoders or label embeddings do not match the registry "
                f"({size}x{size} images, {dim}-dimensional embeddings, {labels} labels)."
            )
        self._cached: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Shared cache keys: the artifact's SHA-256 besides the version's id, because ids start
        # again in a new database while Redis keeps its entries.
        self._shared_key_base = (
            f"zero-shot-label:{model_version.pk}:{model_version.artifact_sha256}"
        )
        # Counted for tests and benchmarks: how often the text encoder actually ran.
        self.text_encoder_invocations = 0

    def warm_up(self) -> None:
        size = self.input_size
        self.interpreter.invoke(np.zeros((1, size, size, 3), dtype=np.float32))
        self.text_interpreter.invoke(np.zeros((1, CONTEXT_LENGTH), dtype=np.int32))

    def image_embedding(self, batch: np.ndarray) -> np.ndarray:
        return _normalised(self.interpreter.invoke(batch)[0])

    def _scores(self, image_embedding: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        logits = np.float32(self.spec.logit_scale) * (text_embeddings @ image_embedding)
        return softmax(logits)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Scores against the registration labels, whose embeddings were stored with it."""
        return self._scores(self.image_embedding(batch), self.label_embeddings)

    def run_labels(self, batch: np.ndarray, *, labels: list[str]) -> np.ndarray:
        """Scores against ``labels`` (validated by ``labels_check``), one per label, in order."""
        text_embeddings = self.label_embeddings_for(labels)
        return self._scores(self.image_embedding(batch), text_embeddings)

    def prompt_token_count(self, label: str) -> int:
        """Tokens of the label's prompt, start and end tokens included."""
        return len(self.tokenizer.tokenize(self.spec.prompt(label))) + 2

    def labels_check(self, labels: list[str]) -> None:
        """Raise InvalidClassificationRequest unless each label's prompt fits CLIP's context."""
        for index, label in enumerate(labels):
            count = self.prompt_token_count(label)
            if count > CONTEXT_LENGTH:
                raise InvalidClassificationRequest(
                    f"labels: label {index + 1} is {count} tokens long in its prompt "
                    f"{self.spec.template!r} (start and end included); at most "
                    f"{CONTEXT_LENGTH} fit."
                )

    def label_embeddings_for(self, labels: list[str]) -> np.ndarray:
        """L2-normalised prompt embeddings of ``labels``: from this worker's memory, else from
        the shared cache (what another worker computed), else computed now and shared."""
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for label in labels:
                embedding = self._cached.get(label)
                if embedding is not None:
                    self._cached.move_to_end(label)
                    found[label] = embedding
        missing = [label for label in dict.fromkeys(labels) if label not in found]
        if missing:
            found |= self._shared_or_computed(missing)
        return np.stack([found[label] for label in labels])

    def _shared_or_computed(self, labels: list[str]) -> dict[str, np.ndarray]:
        """Embeddings of ``labels`` from the shared cache or the text encoder (then stored in
        the cache), all remembered here. The cache is one round trip each way, and a cache that
        is down or holds a malformed value only means computing."""
        cache = get_result_cache()
        keys = {label: self._shared_key(label) for label in labels}
        shared = cache.shared_get_many(list(keys.values()))
        found: dict[str, np.ndarray] = {}
        computed: dict[str, dict] = {}
        for label, key in keys.items():
            embedding = self._decoded(shared.get(key))
            if embedding is None:
                embedding = self.text_embedding(self.spec.prompt(label))
                computed[key] = self._encoded(embedding)
            found[label] = embedding
        cache.shared_set_many(computed, timeout=settings.CACHE_LABEL_EMBEDDING_TTL)
        with self._cache_lock:
            self._cached.update(found)
            while len(self._cached) > LABEL_EMBEDDINGS_CACHED:
                self._cached.popitem(last=False)
        return found

    def _shared_key(self, label: str) -> str:
        prompt = hashlib.sha256(self.spec.prompt(label).encode("utf-8")).hexdigest()
        return f"{self._shared_key_base}:{prompt}"

    @staticmethod
    def _encoded(embedding: np.ndarray) -> dict:
        """JSON for the cache: the little-endian float32 bytes in base64 (never pickle)."""
        data = np.ascontiguousarray(embedding, dtype="<f4").tobytes()
        return {"float32": base64.b64encode(data).decode("ascii")}

    def _decoded(self, value: object) -> np.ndarray | None:
        """The embedding in a cache value, or None when there is none or it is not one."""
        if not isinstance(value, dict) or not isinstance(value.get("float32"), str):
            return None
        try:
            data = base64.b64decode(value["float32"], validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(data) != 4 * self.spec.embedding_dim:
            return None
        embedding = np.frombuffer(data, dtype="<f4").astype(np.float32)
        return embedding if bool(np.isfinite(embedding).all()) else None

    def text_embedding(self, prompt: str) -> np.ndarray:
        """The text encoder's L2-normalised embedding of ``prompt``, computed now."""
        ids = self.tokenizer.pack(
            self.tokenizer.tokenize(prompt), pad_token_id=self.spec.pad_token_id
        )
        self.text_encoder_invocations += 1
        return _normalised(self.text_interpreter.invoke(ids)[0])

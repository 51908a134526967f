"""The wire format between edge and cloud: safetensors bytes, validated before use.

A request body is one safetensors file holding one tensor, ``features`` (N, *feature
shape), in float32, float16 or bfloat16. Its safetensors metadata (string to string)
declares what the edge claims about it:

=============== =====================================================================
key             value
=============== =====================================================================
``format``      ``splitleak-features/1``
``model``       the architecture name (``mnist-net``, ``user-net-factory-1a2b3c4d``)
``split``       the split point the edge cut after (``ReLU2``)
``defense``     JSON list of the edge's defense specs (``["dropout:features:0.5"]``)
``dtype``       ``float32`` / ``float16`` / ``bfloat16`` (the tensor's dtype)
``shape``       JSON list, the tensor's shape (``[1, 16, 8, 8]``)
``fingerprint`` optional: :func:`weights_fingerprint` of the edge's full model
=============== =====================================================================

An answer is a safetensors file with ``logits`` (N, K) float32 and ``classes`` (N,) int64,
and metadata ``format`` = ``splitleak-answer/1``, ``request_id``, ``model`` and ``split``.

Parsing never trusts the body: the header is read and checked (length, JSON, names,
dtypes, shapes, offsets that cover the body exactly) before safetensors decodes the data,
and the values are checked to be finite. A :class:`WireError` carries the HTTP status the
server answers with and a one-line reason. No pickle is involved anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from splitleak.errors import SplitleakError

FEATURES_FORMAT = "splitleak-features/1"
ANSWER_FORMAT = "splitleak-answer/1"
FEATURES_TENSOR = "features"
MEDIA_TYPE = "application/vnd.splitleak+safetensors"
MAX_HEADER_BYTES = 64 * 1024  # a features header is ~300 bytes; this bounds JSON parsing

#: Feature dtypes the wire carries: name -> (safetensors code, torch dtype).
WIRE_DTYPES: dict[str, tuple[str, torch.dtype]] = {
    "float32": ("F32", torch.float32),
    "float16": ("F16", torch.float16),
    "bfloat16": ("BF16", torch.bfloat16),
}
_CODE_NAMES = {code: name for name, (code, _) in WIRE_DTYPES.items()}
_NAMES_BY_TORCH = {dtype: name for name, (_, dtype) in WIRE_DTYPES.items()}
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_ITEM_BYTES |= {"U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_REQUIRED_META = ("format", "model", "split", "defense", "dtype", "shape")


class WireError(SplitleakError):
    """A body that is not a valid message; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = " ".join(reason.split())  # one line, always
        super().__init__(self.reason)


@dataclass(frozen=True)
class FeatureSpec:
    """What a cloud accepts: one model cut at one split point.

    Attributes:
        model: architecture name the edge must declare.
        split: split point the edge must declare.
        feature_shape: one input's feature shape (without the batch dimension).
        dtypes: accepted wire dtypes (names of :data:`WIRE_DTYPES`).
        max_batch: largest batch one request may carry.
        fingerprint: the model's weights fingerprint; a request declaring another is refused.
    """

    model: str
    split: str
    feature_shape: tuple[int, ...]
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    max_batch: int = 256
    fingerprint: str | None = None

    def max_body_bytes(self) -> int:
        """The largest valid body: a full batch in the widest accepted dtype, plus its header."""
        widest = max(WIRE_DTYPES[d][1].itemsize for d in self.dtypes)
        return MAX_HEADER_BYTES + 8 + self.max_batch * math.prod(self.feature_shape) * widest


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header: metadata and per-tensor (dtype code, shape)."""

    metadata: dict[str, str]
    tensors: dict[str, tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Features:
    """A validated features message. Shapes: z (N, *feature_shape) in its wire dtype."""

    z: torch.Tensor
    metadata: dict[str, str]
    defenses: tuple[str, ...]

    @property
    def dtype(self) -> str:
        return _NAMES_BY_TORCH[self.z.dtype]


def weights_fingerprint(model: nn.Module) -> str:
    """First 16 hex digits of a sha256 over the model's state (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def parse_header(body: bytes) -> Header:
    """Read and check a safetensors header without decoding any tensor data.

    Raises:
        WireError: 400 for anything that is not a complete, well-formed safetensors body.
    """
    if len(body) < 8:
        raise WireError(400, f"body of {len(body)} bytes is not safetensors (no header length)")
    (size,) = struct.unpack("<Q", body[:8])
    if size > MAX_HEADER_BYTES:
        raise WireError(400, f"safetensors header of {size} bytes exceeds {MAX_HEADER_BYTES}")
    if 8 + size > len(body):
        raise WireError(400, f"truncated body: header needs {size} bytes, {len(body) - 8} follow")
    try:
        raw = json.loads(body[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError(400, "safetensors header is not valid JSON") from None
    if not isinstance(raw, dict):
        raise WireError(400, "safetensors header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise WireError(400, "safetensors metadata must map strings to strings")
    tensors, end = {}, 0
    for name, entry in raw.items():
        code, shape, stop = _tensor_entry(name, entry)
        tensors[name], end = (code, shape), max(end, stop)
    if 8 + size + end != len(body):
        short = 8 + size + end > len(body)
        raise WireError(
            400,
            f"{'truncated' if short else 'oversized'} body: tensors need {end} data bytes, "
            f"{len(body) - 8 - size} follow",
        )
    return Header(metadata=metadata, tensors=tensors)


def _tensor_entry(name: str, entry: Any) -> tuple[str, tuple[int, ...], int]:
    ok = isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2
    ok = ok and all(isinstance(o, int) and o >= 0 for o in offsets)  # type: ignore[union-attr]
    if not ok:
        raise WireError(400, f"safetensors entry {name!r} is malformed")
    code, begin, stop = entry["dtype"], offsets[0], offsets[1]  # type: ignore[index]
    item = _ITEM_BYTES.get(code)
    if item is None or stop - begin != item * math.prod(shape):  # type: ignore[arg-type]
        raise WireError(400, f"safetensors entry {name!r}: offsets do not match dtype and shape")
    return code, tuple(shape), stop  # type: ignore[arg-type]


def encode_features(
    z: torch.Tensor,
    *,
    model: str,
    split: str,
    defenses: tuple[str, ...] | list[str] = (),
    dtype: str = "float32",
    fingerprint: str | None = None,
) -> bytes:
    """Serialise edge features for the wire. Shapes: z (N, *feature_shape).

    Raises:
        WireError: the dtype is not a wire dtype, or the values are not finite in it (a
            float16 overflow, for instance).
    """
    if dtype not in WIRE_DTYPES:
        raise WireError(400, f"unknown feature dtype {dtype!r}; valid: {', '.join(WIRE_DTYPES)}")
    t = z.detach().to(device="cpu", dtype=WIRE_DTYPES[dtype][1]).contiguous()
    if not torch.isfinite(t).all():
        raise WireError(400, f"features are not finite in {dtype}; send them as float32")
    metadata = {
        "format": FEATURES_FORMAT,
        "model": model,
        "split": split,
        "defense": json.dumps(list(defenses)),
        "dtype": dtype,
        "shape": json.dumps(list(t.shape)),
    }
    if fingerprint is not None:
        metadata["fingerprint"] = fingerprint
    return safetensors_save({FEATURES_TENSOR: t}, metadata=metadata)


def decode_features(body: bytes, spec: FeatureSpec, *, require_metadata: bool = True) -> Features:
    """Parse and validate a features message against what the cloud serves.

    Args:
        body: the request body (or a features file's bytes).
        spec: model, split, feature shape, dtypes and batch cap to check against.
        require_metadata: refuse a body without the declared metadata (requests do; a
            plain features file may carry none).

    Returns:
        The features in their wire dtype, their metadata and their declared defenses.

    Raises:
        WireError: 400 unparseable, 413 batch over the cap, 409 other weights, 422 anything
            else that does not match ``spec`` or is not finite.
    """
    header = parse_header(body)
    ours = require_metadata or header.metadata.get("format") == FEATURES_FORMAT
    meta = header.metadata if ours else {}  # a foreign file's metadata says nothing to us
    if ours:
        _check_metadata(meta, spec)
    if set(header.tensors) != {FEATURES_TENSOR}:
        names = ", ".join(sorted(header.tensors)) or "none"
        raise WireError(422, f"expected one tensor named {FEATURES_TENSOR!r}, got: {names}")
    code, shape = header.tensors[FEATURES_TENSOR]
    _check_tensor(code, shape, spec)
    actual = (_CODE_NAMES[code], json.dumps(list(shape)))
    if meta and (meta["dtype"], meta["shape"]) != actual:
        raise WireError(
            422, f"metadata declares {meta['dtype']} {meta['shape']}, the tensor is {actual}"
        )
    try:
        z = safetensors_load(body)[FEATURES_TENSOR]
    except Exception as err:  # safetensors raises its own error type for bad bodies
        raise WireError(400, f"unreadable safetensors body: {str(err).splitlines()[0]}") from None
    bad = int((~torch.isfinite(z)).sum())
    if bad:
        raise WireError(422, f"features contain {bad} NaN or infinite values of {z.numel()}")
    return Features(z=z, metadata=meta, defenses=declared_defenses(meta))


def declared_defenses(meta: dict[str, str]) -> tuple[str, ...]:
    """The ``defense`` metadata as a tuple of specs (empty when absent)."""
    try:
        value = json.loads(meta.get("defense", "[]"))
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WireError(422, "metadata 'defense' must be a JSON list of defense specs")
    return tuple(value)


def _check_metadata(meta: dict[str, str], spec: FeatureSpec) -> None:
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise WireError(422, f"metadata lacks {', '.join(missing)}; see docs/runtime.md")
    if meta["format"] != FEATURES_FORMAT:
        raise WireError(422, f"metadata format is {meta['format']!r}, expected {FEATURES_FORMAT}")
    if meta["model"] != spec.model:
        raise WireError(422, f"features are for model {meta['model']!r}; this is {spec.model}")
    if meta["split"] != spec.split:
        raise WireError(422, f"features are from split {meta['split']!r}; expected {spec.split}")
    declared = meta.get("fingerprint")
    if declared is not None and spec.fingerprint is not None and declared != spec.fingerprint:
        raise WireError(409, f"edge weights {declared} differ from the cloud's {spec.fingerprint}")
    declared_defenses(meta)


def _check_tensor(code: str, shape: tuple[int, ...], spec: FeatureSpec) -> None:
    if _CODE_NAMES.get(code) not in spec.dtypes:
        raise WireError(422, f"features are {code}; accepted: {', '.join(spec.dtypes)}")
    if len(shape) != 1 + len(spec.feature_shape) or shape[1:] != spec.feature_shape:
        expected = ", ".join(["N", *map(str, spec.feature_shape)])
        raise WireError(
            422, f"features have shape {list(shape)}; split {spec.split} sends ({expected})"
        )
    if shape[0] < 1:
        raise WireError(422, "empty batch: send at least one input's features")
    if shape[0] > spec.max_batch:
        raise WireError(413, f"batch of {shape[0]} exceeds the cap of {spec.max_batch}")


@dataclass(frozen=True)
class Answer:
    """The cloud's answer. Shapes: logits (N, K) float32, classes (N,) int64."""

    logits: torch.Tensor
    classes: torch.Tensor
    request_id: str


def encode_answer(logits: torch.Tensor, *, request_id: str, model: str, split: str) -> bytes:
    """Serialise f2's logits and their argmax. Shapes: logits (N, K)."""
    logits = logits.detach().to("cpu", torch.float32).contiguous()
    metadata = {"format": ANSWER_FORMAT, "request_id": request_id, "model": model, "split": split}
    return safetensors_save({"logits": logits, "classes": logits.argmax(1)}, metadata=metadata)


def decode_answer(body: bytes, *, batch: int) -> Answer:
    """Parse the cloud's answer for a request of ``batch`` inputs.

    Raises:
        WireError: 502 when the answer is not a valid splitleak answer for that batch.
    """
    try:
        header = parse_header(body)
        tensors = safetensors_load(body)
    except Exception as err:
        raise WireError(502, f"the server's answer is not safetensors: {err}") from None
    logits, classes = tensors.get("logits"), tensors.get("classes")
    ok = header.metadata.get("format") == ANSWER_FORMAT and "request_id" in header.metadata
    if not ok or logits is None or classes is None or logits.dim() != 2 or len(logits) != batch:
        raise WireError(502, f"the server's answer is not a {ANSWER_FORMAT} for {batch} inputs")
    if classes.shape != (batch,):
        raise WireError(502, f"the server's answer has {tuple(classes.shape)} classes for {batch}")
    return Answer(logits=logits, classes=classes, request_id=header.metadata["request_id"])

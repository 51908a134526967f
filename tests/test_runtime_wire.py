"""The wire format: round trips, and every malformed body refused with its status and reason."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from splitleak.runtime.wire import (
    ANSWER_FORMAT,
    FEATURES_FORMAT,
    FeatureSpec,
    WireError,
    decode_answer,
    decode_features,
    encode_answer,
    encode_features,
    parse_header,
    weights_fingerprint,
)

SPEC = FeatureSpec(
    model="net", split="ReLU2", feature_shape=(4, 3, 3), max_batch=8, fingerprint="f0"
)


def features(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 3, 3, generator=torch.Generator().manual_seed(seed))


def body(z: torch.Tensor | None = None, **meta: str) -> bytes:
    """A features body with the given metadata overrides (a value of "" drops the key)."""
    z = features() if z is None else z
    metadata = {
        "format": FEATURES_FORMAT,
        "model": "net",
        "split": "ReLU2",
        "defense": "[]",
        "dtype": "float32",
        "shape": json.dumps(list(z.shape)),
        **meta,
    }
    metadata = {k: v for k, v in metadata.items() if v != ""}
    return safetensors_save({"features": z}, metadata=metadata)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_features_round_trip_bit_for_bit(dtype):
    z = features(3).to(getattr(torch, dtype))
    raw = encode_features(z, model="net", split="ReLU2", defenses=["dropout:features:0.5"],
                          dtype=dtype, fingerprint="f0")  # fmt: skip
    decoded = decode_features(raw, SPEC)
    assert decoded.z.dtype == z.dtype and decoded.dtype == dtype
    assert torch.equal(decoded.z.view(torch.int16 if dtype != "float32" else torch.int32),
                       z.view(torch.int16 if dtype != "float32" else torch.int32))  # fmt: skip
    assert decoded.defenses == ("dropout:features:0.5",)
    meta = parse_header(raw).metadata
    assert meta["split"] == "ReLU2" and meta["shape"] == "[3, 4, 3, 3]" and meta["dtype"] == dtype


def test_float16_halves_the_tensor_bytes():
    z = features(8)
    full = encode_features(z, model="net", split="ReLU2")
    half = encode_features(z, model="net", split="ReLU2", dtype="float16")
    tensor_bytes = z.numel() * 4
    header = len(full) - tensor_bytes
    assert len(half) == header + tensor_bytes // 2  # same header length, half the data


def test_float16_overflow_is_refused_at_the_edge():
    with pytest.raises(WireError, match="not finite in float16"):
        encode_features(torch.full((1, 4, 3, 3), 1e6), model="net", split="ReLU2", dtype="float16")


def test_fingerprint_follows_the_weights():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert weights_fingerprint(a) != weights_fingerprint(b)


def _nan() -> torch.Tensor:
    z = features()
    z[1, 2, 0, 1] = float("nan")
    return z


def _inf() -> torch.Tensor:
    z = features()
    z[0, 0, 0, 0] = float("-inf")
    return z


GOOD = body()
BAD_BODIES = {
    "shorter than 8 bytes": (b"abc", 400, "no header length"),
    "header length past the end": (struct.pack("<Q", 500) + b"{}", 400, "truncated"),
    "header length over the limit": (struct.pack("<Q", 1 << 30) + b"{}", 400, "exceeds"),
    "truncated data": (GOOD[:-10], 400, "truncated"),
    "trailing bytes": (GOOD + b"\0" * 4, 400, "oversized"),
    "header not JSON": (struct.pack("<Q", 4) + b"{{{{", 400, "not valid JSON"),
    "header a list": (struct.pack("<Q", 2) + b"[]", 400, "not a JSON object"),
    "metadata missing": (safetensors_save({"features": features()}), 422, "metadata lacks"),
    "another format": (body(format="other/1"), 422, "format"),
    "another model": (body(model="resnet"), 422, "model 'resnet'"),
    "another split": (body(split="conv1"), 422, "split 'conv1'"),
    "other weights": (body(fingerprint="beef"), 409, "differ"),
    "bad defense metadata": (body(defense="dropout"), 422, "JSON list"),
    "wrong tensor name": (
        safetensors_save({"z": features()}, metadata={**parse_header(GOOD).metadata}),
        422, "named 'features'",
    ),
    "two tensors": (
        safetensors_save({"features": features(), "extra": torch.zeros(1)},
                         metadata={**parse_header(GOOD).metadata}),
        422, "named 'features'",
    ),
    "wrong dtype": (body(features().double(), dtype="float64"), 422, "F64"),
    "wrong shape": (body(torch.zeros(2, 4, 3, 4)), 422, "split ReLU2 sends (N, 4, 3, 3)"),
    "no batch dimension": (body(torch.zeros(4, 3, 3)), 422, "shape"),
    "empty batch": (body(torch.zeros(0, 4, 3, 3)), 422, "empty batch"),
    "batch over the cap": (body(torch.zeros(9, 4, 3, 3)), 413, "cap of 8"),
    "NaN": (body(_nan()), 422, "1 NaN or infinite"),
    "inf": (body(_inf()), 422, "1 NaN or infinite"),
    "metadata shape lies": (body(shape="[3, 4, 3, 3]"), 422, "metadata declares"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_every_malformed_body_gets_its_status_and_one_line_reason(case):
    raw, status, reason = BAD_BODIES[case]
    with pytest.raises(WireError) as caught:
        decode_features(raw, SPEC)
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_a_plain_file_may_carry_no_metadata_but_is_checked_the_same():
    plain = safetensors_save({"features": features()})
    assert decode_features(plain, SPEC, require_metadata=False).z.shape == (2, 4, 3, 3)
    with pytest.raises(WireError, match="NaN"):
        decode_features(safetensors_save({"features": _nan()}), SPEC, require_metadata=False)


def test_answers_round_trip_and_a_bad_answer_is_a_502():
    logits = torch.randn(3, 10)
    raw = encode_answer(logits, request_id="r1", model="net", split="ReLU2")
    answer = decode_answer(raw, batch=3)
    assert torch.equal(answer.logits, logits) and answer.request_id == "r1"
    assert torch.equal(answer.classes, logits.argmax(1))
    assert parse_header(raw).metadata["format"] == ANSWER_FORMAT
    for bad in (b"nonsense", raw[:-3]):
        with pytest.raises(WireError) as caught:
            decode_answer(bad, batch=3)
        assert caught.value.status == 502
    with pytest.raises(WireError, match="for 4 inputs"):
        decode_answer(raw, batch=4)

"""The cloud's work for one request, independent of any transport: validate, capture, f2.

:class:`CloudService` is what the HTTP server calls and what the in-process transport
calls, so the two give the same answers by construction. Every body is validated
(:func:`~splitleak.runtime.wire.decode_features`) before f2 runs; with a
:class:`~splitleak.runtime.capture.CaptureStore` the body is stored durably before the
answer is returned.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from splitleak.runtime.capture import CaptureStore
from splitleak.runtime.wire import (
    FEATURES_FORMAT,
    WIRE_DTYPES,
    FeatureSpec,
    decode_features,
    encode_answer,
    weights_fingerprint,
)

if TYPE_CHECKING:
    from splitleak.experiment import Victim


@dataclass(frozen=True)
class ServiceAnswer:
    """An encoded answer with its request id and where the server spent its time (s)."""

    body: bytes
    request_id: str
    timings: dict[str, float]


def feature_shape_at(edge: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """One input's feature shape out of ``edge`` (a forward pass on zeros)."""
    with torch.no_grad():
        return tuple(edge(torch.zeros(1, *input_shape)).shape[1:])


def parts_fingerprint(edge: nn.Module, cloud: nn.Module) -> str:
    """The deployed model's identity on the wire: edge and cloud weights together."""
    return weights_fingerprint(nn.ModuleDict({"edge": edge, "cloud": cloud}))


def deploy(victim: Victim, *, split: str, defenses: tuple[str, ...] = (), seed: int = 0) -> Any:
    """The victim cut at ``split`` with ``defenses`` deployed (trained ones from the cache)."""
    from splitleak.experiment import deploy_defenses

    return deploy_defenses(victim, split=split, defenses=tuple(defenses), seed=seed)


class CloudService:
    """f2 behind the wire format.

    Args:
        cloud: the cloud part f2 (eval mode; never trained here).
        spec: what requests must look like (model, split, feature shape, dtypes, batch cap).
        capture: where accepted bodies are kept (the curious cloud), or None.
    """

    def __init__(self, cloud: nn.Module, spec: FeatureSpec, *, capture: CaptureStore | None = None):
        self.cloud = cloud.eval()
        self.spec = spec
        self.capture = capture

    @classmethod
    def from_victim(
        cls,
        victim: Victim,
        *,
        split: str,
        defenses: tuple[str, ...] = (),
        capture: CaptureStore | None = None,
        max_batch: int = 256,
        dtypes: tuple[str, ...] = tuple(WIRE_DTYPES),
    ) -> CloudService:
        """Serve the cloud part of ``victim`` deployed at ``split`` with ``defenses``.

        Only defenses that replace a part (fine-tuning f2, NoPeek) change what the cloud
        runs; the others act on the edge alone, so ``defenses`` may be left empty for them.
        """
        deployment = deploy(victim, split=split, defenses=defenses)
        spec = FeatureSpec(
            model=victim.architecture.name,
            split=split,
            feature_shape=feature_shape_at(deployment.edge, victim.architecture.input_shape),
            dtypes=dtypes,
            max_batch=max_batch,
            fingerprint=parts_fingerprint(deployment.edge, deployment.cloud),
        )
        return cls(deployment.cloud, spec, capture=capture)

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/info`` answers: enough for an edge to check it talks to its cloud."""
        return {
            "format": FEATURES_FORMAT,
            "model": self.spec.model,
            "split": self.spec.split,
            "feature_shape": list(self.spec.feature_shape),
            "dtypes": list(self.spec.dtypes),
            "max_batch": self.spec.max_batch,
            "max_body_bytes": self.spec.max_body_bytes(),
            "fingerprint": self.spec.fingerprint,
            "capturing": self.capture is not None,
        }

    def infer(self, body: bytes, *, client: str = "in-process") -> ServiceAnswer:
        """Validate ``body``, capture it, run f2 and encode the answer.

        Raises:
            WireError: the body is not a valid features message for this cloud (nothing is
                captured and f2 does not run).
        """
        started = time.perf_counter()
        features = decode_features(body, self.spec)
        request_id = uuid.uuid4().hex
        parsed = time.perf_counter()
        if self.capture is not None:
            self.capture.record(body, request_id, client=client)
        captured = time.perf_counter()
        with torch.inference_mode():
            logits = self.cloud(features.z.to(torch.float32))
        computed = time.perf_counter()
        answer = encode_answer(
            logits, request_id=request_id, model=self.spec.model, split=self.spec.split
        )
        done = time.perf_counter()
        timings = {
            "parse": parsed - started,
            "capture": captured - parsed,
            "f2": computed - captured,
            "encode": done - computed,
        }
        return ServiceAnswer(body=answer, request_id=request_id, timings=timings)

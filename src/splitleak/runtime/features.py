"""Reading features an attacker captured, and the edge's reference images, validated.

``splitleak attack --features PATH`` accepts a capture directory (``splitleak serve
--capture``), one ``.safetensors`` features file (a captured body, or any file with one
tensor named ``features``) or a ``.npy`` array. Every source goes through the very check the
server runs on a request (:func:`~splitleak.runtime.wire.decode_features`): one tensor,
a float dtype, the split's feature shape, finite values, and — where the file declares
them — the same model and split. A ``.npy`` is read with ``allow_pickle=False``: a pickle
is refused, never loaded. Each problem is one :class:`FeatureFileError` line.

Reference images (``--reference``, the edge's own inputs, for scoring) are a
``.safetensors`` file with ``images`` (and optionally ``labels``, ``indices`` and the
``request_ids`` / ``batches`` metadata ``splitleak edge --save-inputs`` writes) or a
``.npy`` array; uint8 pixels or floats in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save as numpy_save
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from splitleak.errors import SplitleakError
from splitleak.records import atomic_path
from splitleak.runtime.capture import CaptureError, read_index
from splitleak.runtime.wire import FEATURES_TENSOR, FeatureSpec, WireError, decode_features

_NO_BATCH_CAP = 1 << 40


class FeatureFileError(SplitleakError):
    """A features or reference file is unreadable, a pickle, or does not fit the split."""


@dataclass(frozen=True)
class LoadedFeatures:
    """Validated features. Shapes: z (N, *feature_shape) float32.

    ``request_ids`` and ``batches`` say which captured requests the rows came from (in
    order); ``declared_defenses`` lists the distinct defenses the edge declared.
    """

    z: torch.Tensor
    source: Path
    kind: str  # "capture", "safetensors" or "npy"
    request_ids: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()
    wire_dtypes: tuple[str, ...] = ()
    declared_defenses: tuple[tuple[str, ...], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "kind": self.kind,
            "n": len(self.z),
            "request_ids": list(self.request_ids),
            "batches": list(self.batches),
            "wire_dtypes": list(self.wire_dtypes),
            "declared_defenses": [list(d) for d in self.declared_defenses],
        }


def file_spec(model: str, split: str, feature_shape: tuple[int, ...]) -> FeatureSpec:
    """The request check, minus the batch cap and the weights fingerprint."""
    return FeatureSpec(
        model=model, split=split, feature_shape=feature_shape, max_batch=_NO_BATCH_CAP
    )


def _decoded(body: bytes, spec: FeatureSpec, where: Path, *, require_metadata: bool) -> Any:
    try:
        return decode_features(body, spec, require_metadata=require_metadata)
    except WireError as err:
        raise FeatureFileError(f"{where}: {err.reason}") from None


def load_features(
    path: Path, spec: FeatureSpec, *, select: Sequence[str] | None = None
) -> LoadedFeatures:
    """Read features from a capture directory, a ``.safetensors`` or a ``.npy`` file.

    Args:
        path: the source.
        spec: model, split and feature shape they must match.
        select: request ids to take from a capture, in this order (default: all, in index
            order).

    Raises:
        FeatureFileError: anything the server would refuse, a pickle, a missing request.
    """
    if path.is_dir():
        return _from_capture(path, spec, select)
    if not path.is_file():
        raise FeatureFileError(
            f"features {path} not found; give a capture dir, .safetensors or .npy"
        )
    if select:
        raise FeatureFileError(f"{path} is one file; request ids select only from a capture dir")
    if path.suffix == ".npy":
        array = _read_npy(path)
        if tuple(array.shape) == spec.feature_shape:  # one input without its batch dimension
            array = array[None]
        features = _decoded(
            numpy_save({FEATURES_TENSOR: np.ascontiguousarray(array)}),
            spec,
            path,
            require_metadata=False,
        )
        return LoadedFeatures(features.z.float(), path, "npy", wire_dtypes=(features.dtype,))
    if path.suffix == ".safetensors":
        features = _decoded(path.read_bytes(), spec, path, require_metadata=False)
        return LoadedFeatures(
            features.z.float(),
            path,
            "safetensors",
            batches=(len(features.z),),
            wire_dtypes=(features.dtype,),
            declared_defenses=(features.defenses,),
        )
    raise FeatureFileError(
        f"{path}: unknown features format; give a capture dir, .safetensors or .npy"
    )


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise FeatureFileError(
                f"{path} holds pickled data; splitleak never loads pickles — "
                "save a plain numeric array with numpy.save"
            ) from None
        raise FeatureFileError(f"{path} is not a readable .npy file: {err}") from None
    except (OSError, EOFError) as err:
        raise FeatureFileError(f"{path} is not a readable .npy file: {err}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise FeatureFileError(f"{path} is an .npz archive, not one .npy array")
    if array.dtype.kind not in "fiub":
        raise FeatureFileError(f"{path} has dtype {array.dtype}; expected float32 or float16")
    return array


def _from_capture(root: Path, spec: FeatureSpec, select: Sequence[str] | None) -> LoadedFeatures:
    try:
        entries = read_index(root)
    except CaptureError as err:
        raise FeatureFileError(str(err)) from None
    if select:
        by_id = {e["request_id"]: e for e in entries}
        missing = [r for r in select if r not in by_id]
        if missing:
            raise FeatureFileError(
                f"{len(missing)} requests of the reference (first {missing[0]}) are not in {root}"
            )
        entries = [by_id[r] for r in select]
    if not entries:
        raise FeatureFileError(f"capture {root} holds no requests yet")
    parts, dtypes, defenses = [], [], []
    for entry in entries:
        file = root / entry["file"]
        if not file.is_file():
            raise FeatureFileError(f"{file} is indexed but missing; the capture is damaged")
        body = file.read_bytes()
        if entry.get("sha256") and hashlib.sha256(body).hexdigest() != entry["sha256"]:
            raise FeatureFileError(f"{file} does not match its index digest (modified?)")
        features = _decoded(body, spec, file, require_metadata=True)
        parts.append(features.z.float())
        dtypes.append(features.dtype)
        defenses.append(features.defenses)
    return LoadedFeatures(
        z=torch.cat(parts),
        source=root,
        kind="capture",
        request_ids=tuple(e["request_id"] for e in entries),
        batches=tuple(len(p) for p in parts),
        wire_dtypes=tuple(sorted(set(dtypes))),
        declared_defenses=tuple(dict.fromkeys(defenses)),
    )


@dataclass(frozen=True)
class ReferenceImages:
    """The edge's own inputs. Shapes: images (N, C, H, W) float32 in [0, 1]; labels (N,)."""

    images: torch.Tensor
    source: Path
    labels: torch.Tensor | None = None
    indices: torch.Tensor | None = None  # positions in the victim's test set, if known
    request_ids: tuple[str, ...] = field(default_factory=tuple)
    batches: tuple[int, ...] = field(default_factory=tuple)


def load_images(path: Path, *, image_shape: tuple[int, int, int]) -> ReferenceImages:
    """Read images from ``.safetensors`` (``images`` [+ ``labels``, ``indices``]) or ``.npy``.

    Raises:
        FeatureFileError: unreadable, a pickle, not finite, outside [0, 1], wrong shape.
    """
    if not path.is_file():
        raise FeatureFileError(f"images {path} not found")
    if path.suffix == ".npy":
        ref = ReferenceImages(torch.from_numpy(_read_npy(path).copy()), path)
    elif path.suffix == ".safetensors":
        ref = _images_safetensors(path)
    else:
        raise FeatureFileError(f"{path}: unknown images format; give .safetensors or .npy")
    return replace(ref, images=_pixels(ref.images, image_shape, path))


def _images_safetensors(path: Path) -> ReferenceImages:
    from splitleak.runtime.wire import parse_header

    body = path.read_bytes()
    try:
        meta = parse_header(body).metadata
        tensors = safetensors_load(body)
        ids = json.loads(meta.get("request_ids", "[]"))
        batches = json.loads(meta.get("batches", "[]"))
    except (WireError, json.JSONDecodeError) as err:
        raise FeatureFileError(f"{path}: {getattr(err, 'reason', err)}") from None
    except Exception as err:  # safetensors' own error type
        raise FeatureFileError(f"{path}: unreadable safetensors: {err}") from None
    if "images" not in tensors:
        raise FeatureFileError(f"{path} has no tensor named 'images'")
    ok = all(isinstance(i, str) for i in ids) and all(isinstance(b, int) for b in batches)
    if not ok or sum(batches) not in (0, len(tensors["images"])) or len(ids) != len(batches):
        raise FeatureFileError(f"{path}: metadata request_ids/batches do not match the images")
    return ReferenceImages(
        tensors["images"],
        path,
        tensors.get("labels"),
        tensors.get("indices"),
        tuple(ids),
        tuple(batches),
    )


def _pixels(images: torch.Tensor, image_shape: tuple[int, int, int], where: Path) -> torch.Tensor:
    if images.dim() == 3 and image_shape[0] == 1:
        images = images[:, None]
    if tuple(images.shape[1:]) != image_shape:
        expected = ", ".join(["N", *map(str, image_shape)])
        raise FeatureFileError(
            f"{where}: images have shape {list(images.shape)}, expected ({expected})"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise FeatureFileError(f"{where}: images are {images.dtype}; expected uint8 or float")
    images = images.float()
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise FeatureFileError(f"{where}: float images must be finite and in [0, 1]")
    return images


def write_images(
    dest: Path,
    images: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    indices: torch.Tensor | None = None,
    request_ids: Sequence[str] = (),
    batches: Sequence[int] = (),
) -> None:
    """Write reference images (what ``--save-inputs`` writes), atomically. Shapes: (N, C, H, W)."""
    tensors = {"images": images.detach().float().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.to(torch.int64).contiguous()
    if indices is not None:
        tensors["indices"] = indices.to(torch.int64).contiguous()
    meta = {"request_ids": json.dumps(list(request_ids)), "batches": json.dumps(list(batches))}
    with atomic_path(dest) as tmp:
        tmp.write_bytes(safetensors_save(tensors, metadata=meta))

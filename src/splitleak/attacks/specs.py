"""Typed hyperparameters of the attacks: what each one accepts, with types and ranges.

Every preset (``presets/*.toml``) and every override (``--set key=value``, a ``--config``
file) is validated against these specs before any work starts: an unknown key is an error
that lists the valid ones, a value of the wrong type or out of range is an error that says
what was expected. Two families of settings exist:

* :class:`InversionSpec` — rMLE (the white-box attack, and the final step of the two
  shadow-model attacks);
* :class:`TrainingSpec` — how a learned module (decoder, shadow edge) is trained.

The authors' released code uses Adam with AMSGrad and eps = 1e-3 everywhere (victim,
rMLE, decoders, shadows), batch 32 and the query set read in order; the ``authors-code``
profile says so through ``amsgrad``, ``adam_eps``, ``batch_size`` and ``shuffle``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from splitleak.errors import SplitleakError

PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Spec(BaseModel):
    """Strict: unknown keys and NaN/inf are refused; ``int`` fields accept no strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InversionSpec(Spec):
    """rMLE settings (see :class:`~splitleak.attacks.whitebox.WhiteBoxInversion`)."""

    steps: int = Field(500, ge=0, le=1_000_000)  # 0: the start image itself (a limit case)
    lr: PositiveFinite = 1e-2
    tv_weight: NonNegativeFinite = 0.0
    tv_beta: float = Field(1.0, gt=0, le=4, allow_inf_nan=False)
    l2_weight: NonNegativeFinite = 0.0
    clip_to_pixel_range: bool = False
    cosine: bool = False
    init: Literal["mean", "black"] = "mean"
    ignore_zero_features: bool = False
    amsgrad: bool = False
    adam_eps: float = Field(1e-8, gt=0, le=1, allow_inf_nan=False)


class TrainingSpec(Spec):
    """How a decoder or shadow edge is trained (Adam, lr halved every ``halve_every``)."""

    lr: PositiveFinite = 1e-3
    halve_every: int = Field(10, ge=1)
    amsgrad: bool = False
    adam_eps: float = Field(1e-8, gt=0, le=1, allow_inf_nan=False)
    shuffle: bool = True  # False: the query set in order, as the authors' code reads it
    batch_size: int | None = Field(None, ge=1)  # None: the configuration's attack_batch_size


def _float_friendly(spec: type[Spec], values: dict[str, Any]) -> dict[str, Any]:
    # Strict mode refuses an int for a float field (``--set lr=1``); accept it, nothing else.
    out = dict(values)
    for name, field in spec.model_fields.items():
        value = out.get(name)
        if field.annotation is float and isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def validate_spec(spec: type[Spec], values: dict[str, Any], *, where: str) -> Spec:
    """Validate ``values`` against ``spec``; one-line :class:`SplitleakError` otherwise.

    ``where`` names the source for the message (``--set``, a preset table, a config file).
    """
    unknown = sorted(set(values) - set(spec.model_fields))
    if unknown:
        raise SplitleakError(
            f"{where}: unknown setting {unknown[0]!r}; valid: {', '.join(spec.model_fields)}"
        )
    try:
        return spec.model_validate(_float_friendly(spec, values))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        expected = _expected(spec, key)
        raise SplitleakError(
            f"{where}: invalid {key} = {first.get('input')!r} ({first['msg']}); expected {expected}"
        ) from None


def _expected(spec: type[Spec], key: str) -> str:
    field = spec.model_fields.get(key.split(".")[0])
    if field is None:
        return "a valid value"
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(field.annotation)))
    parts = [getattr(field.annotation, "__name__", str(field.annotation))]
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
    return " ".join(parts)


def describe_spec(spec: type[Spec]) -> dict[str, str]:
    """Key → type and default, for ``--help`` and docs."""
    return {
        name: f"{_expected(spec, name)} (default {field.default!r})"
        for name, field in spec.model_fields.items()
    }

"""Choose where to cut a network: edge cost, bandwidth, leakage and accuracy per split point.

A later cut puts more compute and weights on the edge; the feature sent to the cloud changes
size from layer to layer; deeper features are harder to invert (He, Zhang and Lee, 2019).
:func:`split_costs` measures each split point for one input, :func:`plan_rows` adds leakage
and accuracy, :func:`pareto_front` keeps the undominated splits, :func:`recommend` picks one.

MACs (multiply-accumulates): convolutions count output elements x (in_channels / groups) x
kernel size, transposed ones input elements x (out_channels / groups) x kernel size, linear
layers and matmuls output elements x the contracted size (leading dimensions beyond the
batch multiply in), whether called as modules, functions or tensor methods. Bias adds,
batch norm (folded into the previous layer at inference), activations, pooling and
additions count 0. A module called twice counts twice; a parameter used twice or tied is
stored once; buffers (batch-norm statistics) are not parameters.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from itertools import accumulate
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from splitleak.errors import InputError, SplitleakError, unknown_name
from splitleak.models.split import split_model, split_points

#: SSIM from which the paper finds reconstructions recognisable.
RECOGNISABLE_SSIM = 0.3

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # weight (out, in/groups, *kernel)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_WEIGHTED_FUNCTIONS = {F.conv1d, F.conv2d, F.conv3d, F.linear}
_MATMULS: set[object] = {torch.matmul, torch.mm, torch.bmm, operator.matmul, "matmul", "mm", "bmm"}


FEATURE_DTYPES = ("float32", "float16", "bfloat16", "int8", "uint8")


def check_feature_dtype(name: str) -> torch.dtype:
    """The torch dtype features are sent in; a one-line error for anything else."""
    if name not in FEATURE_DTYPES:
        from splitleak.errors import unknown_name

        raise unknown_name("feature dtype", name, FEATURE_DTYPES)
    dtype: torch.dtype = getattr(torch, name)
    return dtype


@dataclass(frozen=True)
class SplitCost:
    """What the edge pays, per input, when the model is cut after ``split``."""

    split: str
    depth: int
    edge_macs: int
    edge_params: int
    edge_param_bytes: int
    feature_shape: tuple[int, ...]
    feature_bytes: int


def _macs(called: Any, args: tuple[Any, ...], out: Any) -> int:
    """MACs of one call of ``called`` (a module or a function) for a batch of one."""
    if isinstance(called, _TRANSPOSED):
        return args[0].numel() * math.prod(called.weight.shape[1:])
    if isinstance(called, _CONVS):
        return out.numel() * math.prod(called.weight.shape[1:])
    if called in _WEIGHTED_FUNCTIONS:
        return out.numel() * math.prod(args[1].shape[1:])
    return out.numel() * args[0].shape[-1] if called in _MATMULS else 0


class _Meter(fx.Interpreter):
    """Runs a traced model once, recording each node's MACs, new parameters and output shape."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.macs: list[int] = []
        self.params: list[int] = []  # elements of the parameters first used at this node
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        self._seen: set[int] = set()
        self.node: fx.Node | None = None  # the node running, to name it if it fails

    def run_node(self, n: fx.Node) -> Any:
        self.node = n
        args, _ = self.fetch_args_kwargs_from_env(n)
        out = super().run_node(n)
        owner = self.fetch_attr(str(n.target)) if n.op in ("call_module", "get_attr") else None
        params = list(owner.parameters()) if isinstance(owner, nn.Module) else [owner]
        new = [p for p in params if isinstance(p, nn.Parameter) and id(p) not in self._seen]
        self._seen.update(id(p) for p in new)
        self.params.append(sum(p.numel() for p in new))
        called = owner if n.op == "call_module" else n.target
        self.macs.append(_macs(called, args, out) if n.op.startswith("call_") else 0)
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape)
        return out


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without touching batch-norm statistics; restore every module's mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _edge_output(gm: fx.GraphModule, at: str) -> str:
    """Name of the node the edge of ``split_model(gm, at=at)`` returns (copies keep names)."""
    output = list(split_model(gm, at=at).edge.graph.nodes)[-1]
    return cast(fx.Node, output.args[0]).name


def _cut_nodes(gm: fx.GraphModule, names: list[str]) -> list[int]:
    """Index in ``gm``'s node list of the node each split name cuts after."""
    nodes = list(gm.graph.nodes)
    index = {n.name: i for i, n in enumerate(nodes)}
    cuts = []
    for name in names:  # a split is named after its module's path or its node's name
        found = {
            i for i, n in enumerate(nodes) if name in (n.name, n.op == "call_module" and n.target)
        }
        if len(found) != 1:  # a module called more than once: split_model knows which call
            found = {index[_edge_output(gm, name)]}
        cuts.append(found.pop())
    return cuts


def split_costs(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    feature_dtype: torch.dtype = torch.float32,
    param_dtype: torch.dtype = torch.float32,
) -> list[SplitCost]:
    """Measure the edge's cost at every split point of ``model`` for one input.

    Args:
        model: any module torch.fx can trace; its weights and train/eval modes are untouched.
        input_shape: one input's shape without the batch dimension, e.g. ``(1, 28, 28)``.
        feature_dtype: dtype the feature is sent in (``torch.int8`` for quantised transfer).
        param_dtype: dtype the edge stores its weights in.

    Returns:
        One :class:`SplitCost` per split point, in :func:`split_points` order.

    Raises:
        InputError: the model fails on ``input_shape``, or a split point outputs no tensor.
    """
    gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    first = next(gm.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros(1, *input_shape, dtype=dtype, device=None if first is None else first.device)
    meter = _Meter(gm)
    try:
        with _eval_mode(gm), torch.no_grad():
            meter.run(x)
    except Exception as err:  # a user's model may raise anything; fx appends a traceback
        where, why = meter.node.name if meter.node else "?", str(err).splitlines()[0]
        raise InputError(f"model failed at {where} on input shape {input_shape}: {why}") from None
    names, nodes = split_points(gm), list(gm.graph.nodes)
    macs, params = list(accumulate(meter.macs)), list(accumulate(meter.params))
    costs = []
    for depth, (name, i) in enumerate(zip(names, _cut_nodes(gm, names), strict=True)):
        if nodes[i] not in meter.shapes:
            raise InputError(f"split point {name!r} outputs no single tensor; cannot size it")
        shape = meter.shapes[nodes[i]][1:]
        size = math.prod(shape) * feature_dtype.itemsize
        weights = params[i] * param_dtype.itemsize
        costs.append(SplitCost(name, depth, macs[i], params[i], weights, shape, size))
    return costs


@dataclass(frozen=True)
class PlanRow:
    """A split point's cost with its accuracy and leakage (worst-case SSIM), None if unknown."""

    cost: SplitCost
    accuracy: float | None
    leakage: float | None

    @property
    def split(self) -> str:
        return self.cost.split

    @property
    def edge_macs(self) -> int:
        return self.cost.edge_macs

    @property
    def feature_bytes(self) -> int:
        return self.cost.feature_bytes

    @property
    def edge_param_bytes(self) -> int:
        return self.cost.edge_param_bytes


def _checked(kind: str, values: dict[str, float], splits: list[str]) -> dict[str, float]:
    for name, value in values.items():
        if name not in splits:
            raise unknown_name(f"split point in {kind}", name, splits)
        if not math.isfinite(value):
            raise InputError(f"{kind} at {name!r} is {value}; expected a finite number")
    return values


def plan_rows(
    costs: list[SplitCost],
    *,
    leakage: dict[str, float],
    accuracy: dict[str, float] | float | None,
) -> list[PlanRow]:
    """Join costs with leakage and accuracy; a split missing from a dict gets None.

    Args:
        costs: from :func:`split_costs`.
        leakage: split -> worst-case SSIM over the attacks run there (higher is worse).
        accuracy: split -> accuracy, or one accuracy for every split, or None.

    Raises:
        UnknownNameError: a key is not a split point of ``costs``.
        InputError: a value is NaN or infinite.
    """
    splits = [c.split for c in costs]
    if isinstance(accuracy, int | float):
        accuracy = dict.fromkeys(splits, float(accuracy))
    leaks, accs = _checked("leakage", leakage, splits), _checked("accuracy", accuracy or {}, splits)
    return [PlanRow(cost=c, accuracy=accs.get(c.split), leakage=leaks.get(c.split)) for c in costs]


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _objectives(rows: list[PlanRow], *, memory: bool = False) -> list[tuple[float, ...]]:
    """Vectors to minimise; unknown leakage or accuracy is the worst possible value."""
    use_leakage = any(r.leakage is not None for r in rows)
    use_accuracy = any(r.accuracy is not None for r in rows)
    return [
        (r.edge_macs, r.feature_bytes)
        + ((r.edge_param_bytes,) if memory else ())
        + ((_or_inf(r.leakage),) if use_leakage else ())
        + ((_or_inf(None if r.accuracy is None else -r.accuracy),) if use_accuracy else ())
        for r in rows
    ]


def pareto_front(rows: list[PlanRow], *, memory: bool = False) -> list[PlanRow]:
    """The rows no other row dominates, in input order; rows with equal objectives all stay.

    Objectives: fewer edge MACs, fewer feature bytes, lower leakage, higher accuracy (and,
    with ``memory``, fewer edge parameter bytes). One unknown for every row is ignored; one
    unknown for some rows counts as worst there.
    """
    vectors = _objectives(rows, memory=memory)

    def dominated(v: tuple[float, ...]) -> bool:
        return any(w != v and all(a <= b for a, b in zip(w, v, strict=True)) for w in vectors)

    return [row for row, v in zip(rows, vectors, strict=True) if not dominated(v)]


@dataclass(frozen=True)
class Constraints:
    """Limits a split must meet; None leaves a quantity free."""

    max_edge_macs: int | None = None
    max_feature_bytes: int | None = None
    max_leakage: float | None = None
    min_accuracy: float | None = None
    max_edge_param_bytes: int | None = None

    def __post_init__(self) -> None:
        # Checked when built, so that a limit no split can meet (or every split meets by
        # construction) is refused before any victim is trained or attacked.
        for name in ("max_edge_macs", "max_feature_bytes", "max_edge_param_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SplitleakError(f"{_FLAGS[name]} {value}: a budget cannot be negative")
        for name, what in (("max_leakage", "an SSIM"), ("min_accuracy", "an accuracy")):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise SplitleakError(
                    f"{_FLAGS[name]} {value}: {what} limit is a fraction between 0 and 1 "
                    f"(e.g. {0.3 if name == 'max_leakage' else 0.98})"
                )


#: Each constraint's command-line option, for error messages.
_FLAGS = {
    "max_edge_macs": "--max-edge-macs",
    "max_feature_bytes": "--max-bytes",
    "max_leakage": "--max-leakage",
    "min_accuracy": "--min-accuracy",
    "max_edge_param_bytes": "--max-edge-memory",
}


@dataclass(frozen=True)
class Recommendation:
    """The chosen row (None if no split fits), every feasible row, and a one-line reason."""

    row: PlanRow | None
    feasible: list[PlanRow]
    reason: str


def _human(value: float, units: tuple[str, ...], step: int = 1000) -> str:
    scale = 0
    while abs(value) >= step and scale < len(units) - 1:
        value, scale = value / step, scale + 1
    return f"{value:.{min(scale, 1)}f}{units[scale]}"


_macs_text = partial(_human, units=(" MACs", " k MACs", " M MACs", " G MACs", " T MACs"))
_bytes_text = partial(_human, units=(" B", " KiB", " MiB", " GiB", " TiB"), step=1024)


# Constraint -> (formatter, advice); it limits the PlanRow attribute named without max_/min_.
_LIMITS: dict[str, tuple[Callable[[float], str], str]] = {
    "max_edge_macs": (_macs_text, "use a lighter edge model"),
    "max_feature_bytes": (_bytes_text, "send the features as int8"),
    "max_leakage": ("{:.3g}".format, "add a defense"),
    "min_accuracy": ("{:.3g}".format, "retrain or weaken the defense"),
    "max_edge_param_bytes": (_bytes_text, "quantise the edge weights"),
}


def _violates(row: PlanRow, field: str, limit: float) -> bool:
    value = getattr(row, field[4:])  # max_leakage -> row.leakage
    if value is None:  # unmeasured: the limit cannot be shown to hold
        return True
    return bool(value < limit if field.startswith("min_") else value > limit)


def _best_measured(rows: list[PlanRow], field: str) -> str:
    """E.g. "lowest leakage measured: 0.31 at fc1"; the earliest split wins a tie."""
    quantity = field[4:].replace("_", " ")
    known = [(v, r.split) for r in rows if (v := getattr(r, field[4:])) is not None]
    if not known:
        return f"no {quantity} measured"
    most, pick = ("highest", max) if field.startswith("min_") else ("lowest", min)
    value, split = pick(known, key=lambda vs: vs[0])
    return f"{most} {quantity} measured: {_LIMITS[field][0](value)} at {split}"


def _infeasible_reason(rows: list[PlanRow], active: dict[str, float]) -> str:
    if not rows:
        return "no split points to choose from; give a model with at least one split point"
    counts = {field: sum(_violates(r, field, lim) for r in rows) for field, lim in active.items()}
    field = max(counts, key=lambda name: counts[name])  # the first declared wins a tie
    head = f"no split point satisfies {field}={active[field]}"
    if counts[field] < len(rows):
        head += f" with the other limits ({field} alone rules out {counts[field]} of {len(rows)})"
    return f"{head} ({_best_measured(rows, field)}); relax it or {_LIMITS[field][1]}"


def recommend(rows: list[PlanRow], constraints: Constraints) -> Recommendation:
    """Pick the feasible Pareto-optimal split with the lowest leakage.

    Ties go to fewer edge MACs, then fewer feature bytes. A limit on leakage or accuracy
    rules out the splits where it was not measured. Read the result with the paper's rule
    in mind: put at least one fully-connected layer on the edge; its attacks rebuild
    recognisable inputs from convolutional features and struggle after such a layer.

    Returns:
        A :class:`Recommendation`; when no split fits, ``row`` is None and ``reason``
        names the constraint that rules out the most splits.
    """
    active = {k: v for k, v in vars(constraints).items() if v is not None}
    feasible = [r for r in rows if not any(_violates(r, f, lim) for f, lim in active.items())]
    if not feasible:
        return Recommendation(row=None, feasible=[], reason=_infeasible_reason(rows, active))
    front = pareto_front(feasible)
    best = min(front, key=lambda r: (_or_inf(r.leakage), r.edge_macs, r.feature_bytes))
    leak = "unknown" if best.leakage is None else f"{best.leakage:.3g}"
    reason = (
        f"{best.split}: lowest leakage ({leak}) of {len(front)} Pareto-optimal among "
        f"{len(feasible)} feasible splits; {_macs_text(best.edge_macs)} on the edge, "
        f"{_bytes_text(best.feature_bytes)} sent per input"
    )
    return Recommendation(row=best, feasible=feasible, reason=reason)


def format_table(
    rows: list[PlanRow], *, pareto: list[PlanRow] | None = None
) -> list[dict[str, str]]:
    """Human-readable cells per row; Pareto rows (computed when ``pareto`` is None) get "★"."""
    front = pareto_front(rows) if pareto is None else pareto
    return [
        {
            "pareto": "★" if r in front else "",
            "split": r.split,
            "depth": str(r.cost.depth),
            "edge MACs": _macs_text(r.edge_macs),
            "edge params": _human(r.cost.edge_params, ("", " k", " M", " G", " T")),
            "edge weights": _bytes_text(r.edge_param_bytes),
            "feature shape": "x".join(map(str, r.cost.feature_shape)),
            "feature size": _bytes_text(r.feature_bytes),
            "leakage (SSIM)": "—" if r.leakage is None else f"{r.leakage:.3f}",
            "accuracy": "—" if r.accuracy is None else f"{r.accuracy:.3f}",
        }
        for r in rows
    ]


def plan_record(
    rows: list[PlanRow], constraints: Constraints, *, pareto: list[PlanRow] | None = None
) -> dict[str, Any]:
    """A JSON-ready record of a plan: constraints, every row, the Pareto flags, the pick."""
    front = {r.cost.split for r in (pareto_front(rows) if pareto is None else pareto)}
    rec = recommend(rows, constraints)
    return {
        "constraints": asdict(constraints),
        "rows": [
            {
                **asdict(r.cost),
                "accuracy": r.accuracy,
                "leakage": r.leakage,
                "pareto": r.cost.split in front,
            }
            for r in rows
        ],
        "recommended": rec.row.cost.split if rec.row else None,
        "reason": rec.reason,
    }

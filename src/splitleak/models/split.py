"""Cut a network into an edge part and a cloud part at a named layer.

Any module that :mod:`torch.fx` can trace works, including skip connections and batch norm.
A *split point* is a node of the traced graph after which exactly one tensor crosses the
cut: every later node reads only that node's output and nothing computed before it (the
input included). Cutting inside a residual block is therefore impossible, cutting after its
addition is fine. ``cloud(edge(x)) == model(x)`` holds exactly, because both parts reuse
the original submodules (and so the original weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from splitleak.errors import UnknownNameError, unknown_name

# Nodes that only reshape; listing them as split points would duplicate their input's row.
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)
_RESHAPE_FUNCTIONS = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous"}


@dataclass(frozen=True)
class SplitModel:
    """A model cut at ``at``: ``cloud(edge(x)) == full(x)``."""

    edge: fx.GraphModule
    cloud: fx.GraphModule
    at: str
    full: nn.Module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.cloud(self.edge(x))


def _trace(model: nn.Module) -> fx.GraphModule:
    return model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)


def _node_label(node: fx.Node, reused: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    # Module calls are named by their qualified attribute path ("layer1.conv1", "ReLU2");
    # functions, methods and modules called more than once by fx's unique node name.
    if node.op == "call_module" and str(node.target) not in reused:
        return str(node.target)
    return node.name


def _reused_modules(nodes: list[fx.Node]) -> set[str]:
    targets = [str(n.target) for n in nodes if n.op == "call_module"]
    return {t for t in targets if targets.count(t) > 1}


def _is_reshape(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _RESHAPE_MODULES)
    target = getattr(node.target, "__name__", str(node.target))
    return node.op in {"call_function", "call_method"} and target in _RESHAPE_FUNCTIONS


def _cut_positions(gm: fx.GraphModule) -> dict[str, int]:
    """Map every valid split label to its position in the graph's node order."""
    nodes = list(gm.graph.nodes)
    reused = _reused_modules(nodes)
    positions: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.op not in {"call_module", "call_function", "call_method"}:
            continue
        later = nodes[i + 1 :]
        crossing = {n for n in nodes[: i + 1] if any(u in later for u in n.users)}
        if crossing == {node} and not any(u.op == "output" for u in node.users):
            positions[_node_label(node, reused)] = i
    return positions


def split_points(model: nn.Module, *, include_reshapes: bool = False) -> list[str]:
    """List the layer names at which ``model`` can be cut, in forward order.

    Args:
        model: any module torch.fx can trace.
        include_reshapes: also list pure reshapes (``flatten``), which carry the same
            information as the layer before them.
    """
    gm = _trace(model)
    nodes = list(gm.graph.nodes)
    return [
        label
        for label, i in _cut_positions(gm).items()
        if include_reshapes or not _is_reshape(gm, nodes[i])
    ]


def split_model(model: nn.Module, *, at: str) -> SplitModel:
    """Cut ``model`` after the layer named ``at`` into an edge part and a cloud part.

    Raises:
        UnknownNameError: ``at`` is not a split point; the message lists the valid ones.
    """
    gm = _trace(model)
    positions = _cut_positions(gm)
    if at not in positions:
        raise _not_a_cut(gm, at)
    nodes = list(gm.graph.nodes)
    cut = nodes[positions[at]]
    edge = _subgraph(gm, nodes[: positions[at] + 1], inputs=None, output=cut)
    cloud = _subgraph(gm, nodes[positions[at] + 1 :], inputs=cut, output=None)
    return SplitModel(edge=edge, cloud=cloud, at=at, full=model)


def _not_a_cut(gm: fx.GraphModule, at: str) -> UnknownNameError:
    # A layer that exists but is not a cut point gets a reason, not "unknown".
    nodes = list(gm.graph.nodes)
    reused = _reused_modules(nodes)
    valid = ", ".join(split_points(gm))
    for i, node in enumerate(nodes):
        if _node_label(node, reused) != at:
            continue
        later = nodes[i + 1 :]
        crossing = [n.name for n in nodes[: i + 1] if any(u in later for u in n.users)]
        if any(u.op == "output" for u in node.users):
            reason = "it is the model's output (nothing is left for the cloud)"
        else:
            reason = f"{len(crossing)} tensors cross the cut there ({', '.join(crossing)})"
        return UnknownNameError(
            f"cannot split after {at!r}: {reason}; a split point must pass exactly one "
            f"tensor to the cloud — valid: {valid}"
        )
    return unknown_name("split point", at, split_points(gm))


def _subgraph(
    gm: fx.GraphModule, nodes: list[fx.Node], *, inputs: fx.Node | None, output: fx.Node | None
) -> fx.GraphModule:
    """Copy ``nodes`` into a new graph.

    ``inputs`` becomes the new graph's placeholder and ``output`` its result.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if inputs is not None:
        env[inputs] = graph.placeholder("z")
    for node in nodes:
        if node.op == "output":
            graph.output(env[node.args[0]])  # type: ignore[index]
            continue
        env[node] = graph.node_copy(node, lambda n: env[n])
    if output is not None:
        graph.output(env[output])
    graph.lint()
    return fx.GraphModule(gm, graph)

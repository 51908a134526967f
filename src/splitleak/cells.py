"""One record for all work: a cell is a typed configuration whose hash is its key.

Every measured number splitleak produces is a cell — an attack run (the ``attack``
command, a split-sweep point, a defense level, a benchmark row) or an accuracy measurement
(a split point's test accuracy, with or without a defense). A cell spec names everything
that determines its numbers; :attr:`AttackCell.key` hashes that identity, so the same
configuration finds the same record in any store, whoever computed it.

:func:`compute_cell` runs a cell anywhere — in the driver, in a worker process, in a Ray
task — and returns a :class:`CellOutput`: the JSON record and the reconstructions as
safetensors bytes. Workers never write a store; the driver does (see
:mod:`splitleak.executor`).

A record (format ``splitleak-cell/1``) holds: ``kind``, ``key``, ``identity`` (what the
key hashes), ``config`` (the full resolved configuration), ``seed``, ``versions``,
``device`` (:meth:`splitleak.compute.Compute.describe`), ``timings`` and ``wall_s``,
``runner`` (executor, host, attempt), then the result: ``summary``, ``per_image``,
``queries_used`` and ``provenance`` for an attack; ``values``, ``summary`` and
``test_images`` for an accuracy cell.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, TypeAdapter
from safetensors.torch import save

from splitleak.attacks.factory import attack_settings
from splitleak.compute import Compute
from splitleak.config import AttackConfig, Strict, VictimConfig
from splitleak.errors import SplitleakError
from splitleak.experiment import (
    Victim,
    default_cache_dir,
    defended_accuracy,
    load_victim,
    run_attack,
)
from splitleak.metrics import summarize
from splitleak.models.checkpoint import META_FILE
from splitleak.records import stable_hash, versions
from splitleak.store import cell_key

CELL_FORMAT = "splitleak-cell/1"
# Attacks that learn no module other cells could share; any other attack is assumed to
# (a decoder, an imitation, a shadow, a clone), so its cells are ordered (see shared_models).
_LEARNS_NOTHING = frozenset({"whitebox"})
# Attacks whose learned module depends on no inversion setting.
_DECODERS = frozenset({"inverse-network"})
# Attacks that train a surrogate f1' (a shadow or an imitation), cached by its training
# settings alone (splitleak.attacks.surrogate): one surrogate serves every inversion.
_SURROGATES = frozenset({"shadow", "model-reconstruction"})


class VictimId(Strict):
    """What identifies a trained victim inside a cell key (not where its files are)."""

    checkpoint: str
    architecture: str
    data: str | None = None

    @classmethod
    def of(cls, victim: Victim) -> VictimId:
        return cls(
            checkpoint=str(victim.checkpoint.name if victim.checkpoint else None),
            architecture=victim.architecture.name,
            data=victim.meta.get("data_fingerprint"),
        )


class AttackCell(Strict):
    """One attack run on one victim; the key hashes the attack settings and the victim id.

    The settings are hashed both as configured (profile name, ``--set`` overrides) and as
    resolved from the profile's presets, so that a record made under an older preset is
    not taken for the answer of a newer one.
    """

    kind: Literal["attack"] = "attack"
    attack: AttackConfig
    victim_id: VictimId

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "attack": self.attack.model_dump(mode="json", exclude={"victim"}),
            "settings": attack_settings(self.attack, architecture=self.victim_id.architecture),
            "victim": self.victim_id.model_dump(),
        }

    @property
    def key(self) -> str:
        return cell_key("attack", self.identity)

    @property
    def seed(self) -> int:
        return self.attack.seed

    @property
    def victim(self) -> VictimConfig:
        return self.attack.victim

    @property
    def label(self) -> str:
        return attack_label(self.attack)

    def shared_models(self) -> tuple[str, ...]:
        """Ids of the learned modules this cell trains or reuses (empty: it learns nothing).

        Cells with a common id share one cached model — a decoder, a shadow, a trained
        defense — so the executor runs the first of them before the others. An id keeps
        the settings that reach the model's cache key: two cells that share a model but
        not an id would both train it, at the same time, under parallel executors.
        """
        # The recognisability evaluator, trained once per dataset, is not among them: the
        # driver trains it while the workers attack (see splitleak.executor.submit).
        trained = _trained_defenses(self.victim_id, self.attack.split, self.attack)
        learned = self._learned_module()
        return tuple(g for g in (trained, learned) if g is not None)

    def _learned_module(self) -> str | None:
        name = self.attack.attack
        if name in _LEARNS_NOTHING:
            return None
        drop = {"victim", "defenses", "adaptive", "compute"}
        if name in _DECODERS:  # the decoder's cache key holds no inversion setting
            drop |= {"profile", "surrogate_inversion", "shadow_arch"}
        if name in _SURROGATES:  # nor the surrogate's: its training settings, as resolved
            drop |= {"profile", "overrides", "surrogate_inversion"}
        settings = self.attack.model_dump(mode="json", exclude=drop)
        if name in _SURROGATES:
            resolved = attack_settings(self.attack, architecture=self.victim_id.architecture)
            settings["resolved"] = {k: v for k, v in resolved.items() if k != "inversion"}
        # Defenses reach the learned module when the attacker queries through them, or when
        # they change the deployed model (fine-tuning, NoPeek): keep them all but the
        # non-adaptive, non-deployed case, where the attacker queries the bare edge.
        defenses = list(self.attack.defenses) if self.attack.adaptive else _deployed(self.attack)
        ident = {"settings": settings, "defenses": defenses, "victim": self.victim_id.model_dump()}
        return f"{name}-{stable_hash(ident)}"


def _trained_defenses(
    victim: VictimId, split: str, cell: AttackConfig | AccuracyCell
) -> str | None:
    """The id of the defense training a cell's deployment runs (None: nothing trains)."""
    from splitleak.defenses import parse_defense
    from splitleak.defenses.deploy import needs_preparation

    if not any(needs_preparation(parse_defense(d)) for d in cell.defenses):
        return None
    ident = {"victim": victim.model_dump(), "split": split, "defenses": list(cell.defenses)}
    return f"defenses-{stable_hash({**ident, 'seed': cell.seed})}"


def _deployed(cfg: AttackConfig) -> list[str]:
    """The defenses that change the deployed model itself (every attacker faces them)."""
    from splitleak.defenses import parse_defense
    from splitleak.defenses.deploy import replaced_part

    return [d for d in cfg.defenses if replaced_part(parse_defense(d))]


class AccuracyCell(Strict):
    """The test accuracy of a victim cut at ``split`` under ``defenses`` (none: undefended)."""

    kind: Literal["accuracy"] = "accuracy"
    victim: VictimConfig
    victim_id: VictimId
    split: str
    defenses: tuple[str, ...] = ()
    draws: int = Field(3, ge=1)
    seed: int = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "defenses": list(self.defenses),
            "draws": self.draws if self.defenses else 1,
            "seed": self.seed,
            "victim": self.victim_id.model_dump(),
        }

    @property
    def key(self) -> str:
        return cell_key("accuracy", self.identity)

    @property
    def label(self) -> str:
        against = f" vs {', '.join(self.defenses)}" if self.defenses else ""
        return f"accuracy at {self.split}{against}"

    def shared_models(self) -> tuple[str, ...]:
        """Ids of the trained defenses this cell deploys (see :meth:`AttackCell.shared_models`)."""
        group = _trained_defenses(self.victim_id, self.split, self)
        return () if group is None else (group,)


CellSpec = Annotated[AttackCell | AccuracyCell, Field(discriminator="kind")]
_CELL = TypeAdapter(CellSpec)


def parse_cell(data: dict[str, Any]) -> AttackCell | AccuracyCell:
    """A cell spec from its JSON form (as sent to a worker)."""
    return _CELL.validate_python(data)


def attack_label(a: AttackConfig) -> str:
    """``whitebox @ ReLU2``, ``shadow @ conv1 [same-set, different net] vs dropout:... (aware)``."""
    text = f"{a.attack} @ {a.split}"
    if a.attack != "whitebox":
        net = f", {a.shadow_arch} net" if a.attack in ("shadow", "model-reconstruction") else ""
        text += f" [{a.attacker_data}{net}]"
    if a.defenses:
        text += f" vs {', '.join(a.defenses)}" + (" (aware)" if a.adaptive else "")
    return text


def attack_spec(cfg: AttackConfig, victim: Victim) -> AttackCell:
    return AttackCell(attack=cfg, victim_id=VictimId.of(victim))


def accuracy_spec(
    victim: Victim,
    *,
    victim_config: VictimConfig,
    split: str,
    defenses: tuple[str, ...] = (),
    draws: int = 3,
    seed: int = 0,
) -> AccuracyCell:
    return AccuracyCell(
        victim=victim_config,
        victim_id=VictimId.of(victim),
        split=split,
        defenses=tuple(defenses),
        draws=draws,
        seed=seed,
    )


# -- where a cell finds its victim ----------------------------------------------------------

_VICTIMS: OrderedDict[str, Victim] = OrderedDict()
_KEEP_VICTIMS = 4


def victim_ref(victim: Victim) -> str:
    """How a task names its victim: the checkpoint folder, or an in-process handle."""
    return str(victim.checkpoint) if victim.checkpoint else f"memory:{id(victim)}"


def register_victim(victim: Victim) -> str:
    """Make ``victim`` available to cells computed in this process; returns its reference."""
    ref = victim_ref(victim)
    _remember(ref, victim)
    return ref


def _remember(ref: str, victim: Victim) -> None:
    _VICTIMS[ref] = victim
    _VICTIMS.move_to_end(ref)
    while len(_VICTIMS) > _KEEP_VICTIMS:
        _VICTIMS.popitem(last=False)


def victim_for(config: VictimConfig, ref: str) -> Victim:
    """The victim a task names: registered in this process, else loaded from its checkpoint.

    A worker on another machine finds the checkpoint under its own model cache (where the
    executor installs shipped checkpoints) when the driver's path does not exist there.
    """
    if ref in _VICTIMS:
        _VICTIMS.move_to_end(ref)
        return _VICTIMS[ref]
    if ref.startswith("memory:"):
        raise SplitleakError(
            "this victim exists only in the driver's memory (no checkpoint); "
            "use --executor serial or load the victim from a checkpoint"
        )
    path = Path(ref)
    if not (path / META_FILE).is_file():
        path = (config.cache_dir or default_cache_dir()) / "models" / path.name
    victim = load_victim(config.model_copy(update={"checkpoint": path}), progress=False)
    _remember(ref, victim)
    return victim


# -- computing a cell -----------------------------------------------------------------------


@dataclass(frozen=True)
class CellOutput:
    """A computed cell: its key, its JSON record, and its tensors as safetensors bytes."""

    key: str
    record: dict[str, Any]
    tensors: bytes | None
    unscored: Unscored | None = None


@dataclass(frozen=True)
class Unscored:
    """What the driver needs to add the recognisability measures to a cell computed with
    ``defer_scoring``: the float reconstructions, their originals and their labels, as
    safetensors bytes (tensors sent between processes as bytes, not as shared memory).

    Shapes: ``images`` and ``reference`` (N, C, H, W) float pixels, ``labels`` (N,).
    """

    data: bytes

    @classmethod
    def of(cls, images: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> Unscored:
        tensors = {"images": images, "reference": reference, "labels": labels}
        return cls(save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}))

    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        return load(self.data)


def seed_everything(seed: int) -> None:
    """Reset every process-global random stream from the cell's seed.

    Cells draw from seeded generators; this makes any draw that does not (a library's
    default initialisation, say) a function of the cell's seed too, not of whichever cells
    ran earlier in the same worker.
    """
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def _common(spec: AttackCell | AccuracyCell, started: float, compute: Compute) -> dict[str, Any]:
    return {
        "format": CELL_FORMAT,
        "kind": spec.kind,
        "identity": spec.identity,
        "seed": spec.seed,
        "versions": versions(),
        "device": compute.describe(),
        "wall_s": round(time.perf_counter() - started, 3),
    }


def compute_cell(payload: dict[str, Any]) -> CellOutput:
    """Compute one cell (the worker function of every executor).

    Args:
        payload: ``cell`` (the spec's JSON), ``victim`` (a :func:`victim_ref`),
            ``progress`` (show training bars; the serial executor only) and
            ``defer_scoring`` (leave the recognisability measures to the driver, which
            trains their evaluator while the workers attack: see :class:`Unscored`).

    Shapes: the stored tensors ``x_hat`` (reconstructions) and ``x`` (originals) are
    (N, C, H, W) uint8 pixels.
    """
    spec = parse_cell(payload["cell"])
    victim = victim_for(spec.victim, payload["victim"])
    seed_everything(spec.seed)
    started = time.perf_counter()
    threads = torch.get_num_threads()  # what this worker runs with (the executor sets it)
    if isinstance(spec, AccuracyCell):
        values = defended_accuracy(
            victim, split=spec.split, defenses=spec.defenses, draws=spec.draws, seed=spec.seed
        )
        record = {
            **_common(spec, started, Compute(threads=threads)),  # the CPU in fp32
            "config": spec.model_dump(mode="json"),
            "values": values,
            "summary": summarize(values).as_dict(),
            "test_images": len(victim.test),
            "timings": {"evaluate_s": round(time.perf_counter() - started, 3)},
        }
        return CellOutput(spec.key, record, None)
    compute = replace(spec.attack.compute.resolve(), threads=threads)
    defer = bool(payload.get("defer_scoring"))
    run = run_attack(
        spec.attack, victim=victim, progress=bool(payload.get("progress")), compute=compute,
        score=not defer,
    )  # fmt: skip
    record = {
        **_common(spec, started, compute),
        "config": spec.attack.model_dump(mode="json"),
        "summary": run.summary,
        "per_image": run.per_image,
        "timings": run.timings,
        "queries_used": run.queries_used,
        "provenance": run.provenance,
    }
    tensors = save({"x_hat": _to_uint8(run.reconstruction.images), "x": _to_uint8(run.reference)})
    unscored = None
    if defer:
        labels = victim.test.labels[torch.tensor(run.per_image["index"], dtype=torch.long)]
        unscored = Unscored.of(run.reconstruction.images, run.reference, labels)
    return CellOutput(spec.key, record, tensors, unscored)


def score_cell(output: CellOutput, victim: Victim, cache_dir: Path | None) -> CellOutput:
    """``output`` with the recognisability measures its worker left out (see
    :class:`Unscored`); unchanged if it has them."""
    from splitleak.experiment import recognisability_record

    if output.unscored is None:
        return output
    t = output.unscored.tensors()
    measures = recognisability_record(
        victim, t["images"], t["reference"], t["labels"], cache_dir=cache_dir
    )
    provenance = {**output.record["provenance"], "recognisability": measures}
    return CellOutput(output.key, {**output.record, "provenance": provenance}, output.tensors)


def train_evaluator(victim: Victim, cache_dir: Path | None) -> None:
    """Train (or find in the cache) the recognisability evaluator of ``victim``'s dataset."""
    from splitleak.experiment import evaluator_cache
    from splitleak.recognisability import evaluator_for

    evaluator_for(victim.train, cache_dir=evaluator_cache(cache_dir))


def train_victim(payload: dict[str, Any]) -> dict[str, Any]:
    """Train (or find) a victim in a worker; returns its checkpoint and, if asked, its files.

    Args:
        payload: ``victim`` (a VictimConfig's JSON), ``ship`` (return the checkpoint's
            files, for a driver on another machine) and ``compute`` (a ComputeSettings'
            JSON: where to train it; None: the CPU in fp32).
    """
    from splitleak.config import ComputeSettings
    from splitleak.executor.artifacts import pack_folder

    settings = payload.get("compute")
    compute = ComputeSettings.model_validate(settings).resolve() if settings else None
    victim = load_victim(
        VictimConfig.model_validate(payload["victim"]), progress=False, compute=compute
    )
    register_victim(victim)
    assert victim.checkpoint is not None  # load_victim always names its checkpoint
    ship = payload.get("ship")
    bundle = pack_folder(victim.checkpoint, f"models/{victim.checkpoint.name}") if ship else None
    return {"checkpoint": str(victim.checkpoint), "bundle": bundle}


def cell_numbers(record: dict[str, Any]) -> dict[str, Any]:
    """Every number a cell measured (what must not depend on the executor)."""
    return {
        k: record.get(k)
        for k in ("summary", "per_image", "values", "queries_used", "test_images")
        if k in record
    }

"""Tuning an attack's settings on the attacker's own data, never on the evaluation images.

An auditor must report the strongest attack the threat model allows without peeking at the
answers. :class:`TunedAttack` wraps an attack and, inside ``fit``, searches its settings on
data the attacker has:

* white-box: the attacker runs f1 on its *own* images (drawn like attacker samples,
  disjoint from the evaluation images) and scores each candidate on them;
* black-box: it holds out part of its query pairs (those queries are counted);
* query-free: it tunes on its shadow, inverting the shadow's own features of held-out
  images.

``inversion`` search (rMLE attacks): every candidate is an
:class:`~splitleak.attacks.specs.InversionSpec` change (λ_TV, β, lr, steps, start image,
schedule) applied to the fitted attack; ``training`` search (the inverse network): every
candidate trains a decoder (learning rate, decoder kind). Candidates are drawn at random
(seeded) from the product of the configured lists, the profile's own settings first, and
ranked by the mean PSNR (or SSIM) on the tuning images. The search space, the budget, the
tuning images' indices, every trial and the chosen values are kept in ``tuning_`` and go
into the run's provenance; :mod:`splitleak.checks` fails a result whose tuning or attacker
images overlap the evaluation images.

Shapes: z (N, *feature_shape) -> Reconstruction.images (N, C, H, W) in [0, 1].

Example::

    attack = TunedAttack(build=lambda change: WhiteBoxInversion(**{**strong, **change}),
                         search="inversion", tuning=TuningSpec(budget=8), seed=0)
    x_hat = attack.fit(WhiteBoxAccess(edge, ...), own_images).reconstruct(z).images
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field

from splitleak.attacks.access import QueryAccess, TailAccess, WhiteBoxAccess
from splitleak.attacks.base import Reconstruction
from splitleak.attacks.specs import Spec
from splitleak.attacks.whitebox import WhiteBoxInversion
from splitleak.data.splits import AttackerSamples
from splitleak.errors import NotFittedError, SplitleakError
from splitleak.metrics import image_metrics

Search = Literal["inversion", "training"]
#: The keys of :class:`TuningSpec` that are lists of candidate values, by search kind.
INVERSION_KEYS = ("tv_weight", "tv_beta", "lr", "steps", "init", "cosine")
TRAINING_KEYS = ("training_lr", "decoder")


class TuningSpec(Spec):
    """How much to search, on how many attacker images, and over which values.

    ``budget`` 0 means no tuning (every profile but ``tuned``). An empty list keeps the
    profile's value for that setting. ``training_lr`` and ``decoder`` apply to the inverse
    network (each candidate trains a decoder); the others to rMLE.
    """

    budget: int = Field(0, ge=0, le=512)  # candidates tried, the profile's own included
    images: int = Field(16, ge=1, le=100_000)  # attacker-side tuning images
    metric: Literal["psnr", "ssim"] = "psnr"
    strategy: Literal["coordinate", "random"] = "coordinate"
    tv_weight: list[float] = Field(default_factory=list)
    tv_beta: list[float] = Field(default_factory=list)
    lr: list[float] = Field(default_factory=list)
    steps: list[int] = Field(default_factory=list)
    init: list[Literal["mean", "black"]] = Field(default_factory=list)
    cosine: list[bool] = Field(default_factory=list)
    training_lr: list[float] = Field(default_factory=list)
    decoder: list[Literal["paper", "auto"]] = Field(default_factory=list)


def search_space(spec: TuningSpec, search: Search) -> dict[str, list[Any]]:
    """The lists to draw candidates from (keys with an empty list are left out)."""
    keys = INVERSION_KEYS if search == "inversion" else TRAINING_KEYS
    return {k: list(getattr(spec, k)) for k in keys if getattr(spec, k)}


def random_search(
    space: dict[str, list[Any]],
    evaluate: Callable[[dict[str, Any]], float],
    *,
    budget: int,
    seed: int,
    base: dict[str, Any],
) -> None:
    """``{}`` (the profile itself), then ``budget - 1`` distinct changes drawn with ``seed``."""
    del base
    grid = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    generator = torch.Generator().manual_seed(seed + 104_729)
    order = torch.randperm(len(grid), generator=generator).tolist() if grid else []
    for change in [{}, *[grid[i] for i in order][: max(budget - 1, 0)]]:
        evaluate(change)


def coordinate_search(
    space: dict[str, list[Any]],
    evaluate: Callable[[dict[str, Any]], float],
    *,
    budget: int,
    seed: int,
    base: dict[str, Any],
) -> None:
    """Greedy, one setting at a time: from the profile, try each listed value of the first
    key (the others at their best so far), keep it if it scores higher, then the next key;
    stops after ``budget`` evaluations. ``base`` holds the profile's current values."""
    del seed
    best: dict[str, Any] = {}
    best_score, used = evaluate({}), 1
    for key, values in space.items():
        for value in values:
            if used >= budget:
                return
            if best.get(key, base.get(_BASE_KEYS.get(key, key))) == value:
                continue  # the current value: already scored
            change = {**best, key: value}
            score, used = evaluate(change), used + 1
            if score > best_score:
                best, best_score = change, score


_BASE_KEYS = {"training_lr": "lr"}
STRATEGIES = {"coordinate": coordinate_search, "random": random_search}


def split_for_tuning(
    data: AttackerSamples, *, n: int, seed: int, hold_out: bool
) -> tuple[AttackerSamples, AttackerSamples]:
    """(the part the attack trains on, the tuning images), drawn with ``seed``.

    ``hold_out``: the tuning images are removed from the training part (learned attacks);
    otherwise the training part is all of ``data``. At least one image is kept to train on.
    """
    if len(data) < 2 and hold_out:
        raise SplitleakError("tuning needs at least 2 attacker samples; raise --attacker-samples")
    n = min(n, len(data) - 1 if hold_out else len(data))
    generator = torch.Generator().manual_seed(seed + 15_485_863)
    order = torch.randperm(len(data), generator=generator)
    tune, rest = order[:n].sort().values, order[n:].sort().values
    return (_subset(data, rest) if hold_out else data), _subset(data, tune)


def _subset(data: AttackerSamples, rows: torch.Tensor) -> AttackerSamples:
    indices = [data.indices[i] for i in rows.tolist()] if data.indices is not None else None
    labels = data.labels[rows] if data.labels is not None else None
    return AttackerSamples(data.kind, data.source, data.pixels[rows], labels, indices)


class TunedAttack:
    """An attack whose settings are searched on the attacker's data inside ``fit``.

    Args:
        build: makes the inner attack from a change of its settings (``{}``: the profile's).
            For ``inversion`` it is called once; for ``training`` once per candidate.
        search: ``inversion`` (rMLE settings of a fitted attack) or ``training``.
        tuning: the budget, the tuning images and the lists to draw from.
        base: the profile's settings the changes apply to (recorded).
        hold_out: remove the tuning images from the data the inner attack trains on
            (anything that learns from the data); the plain white-box attack learns nothing.
        name: the inner attack's name.
        seed: the draw of the candidates and of the tuning images.
    """

    def __init__(
        self,
        *,
        build: Callable[[dict[str, Any]], Any],
        search: Search,
        tuning: TuningSpec,
        base: dict[str, Any],
        hold_out: bool = True,
        name: str = "attack",
        seed: int = 0,
    ) -> None:
        self.build, self.search, self.tuning = build, search, tuning
        self.base, self.hold_out, self.seed = dict(base), hold_out, seed
        self.name = f"tuned-{name}"
        self.attack_: Any
        self.start_: dict[str, Any] = {}

    def fit(self, access: Any, data: AttackerSamples | None = None) -> TunedAttack:
        """Split off the tuning images, fit, search, and keep the best candidate."""
        if data is None:
            raise SplitleakError(
                "tuning needs the attacker's own images; this attack was given none "
                "(use --attacker-data same-distribution, same-set, other-distribution or noise)"
            )
        hold_out = self.hold_out or self.search == "training"
        train, tune = split_for_tuning(
            data, n=self.tuning.images, seed=self.seed, hold_out=hold_out
        )
        space = search_space(self.tuning, self.search)
        if self.search == "inversion":
            evaluate, trials = self._inversion_trials(access, train, tune)
        else:
            evaluate, trials = self._training_trials(access, train, tune)
        STRATEGIES[self.tuning.strategy](
            space, evaluate, budget=max(self.tuning.budget, 1), seed=self.seed, base=self.base
        )
        best = max(range(len(trials)), key=lambda i: trials[i][self.tuning.metric])
        changes = [t["change"] for t in trials]
        self.chosen_change_ = changes[best]
        if self.search == "inversion":
            _set_inversion(self.attack_, {**self.start_, **changes[best]})
        else:
            self.attack_ = self.fitted_[best]
            del self.fitted_
        self.tuning_ = {
            "search": self.search,
            "space": space,
            "budget": self.tuning.budget,
            "strategy": self.tuning.strategy,
            "metric": self.tuning.metric,
            "tuning_data": tune.describe(),
            "held_out": hold_out,
            "trials": trials,
            "chosen": changes[best],
            "base": self.base,
        }
        return self

    def reconstruct(self, z: torch.Tensor) -> Reconstruction:
        """The fitted attack, with the chosen settings."""
        if not hasattr(self, "attack_"):
            raise NotFittedError("call fit(access, data) before reconstruct(z)")
        rec = self.attack_.reconstruct(z)
        rec.info["tuned"] = self.chosen_change_
        return rec

    def hyperparameters(self) -> dict[str, Any]:
        inner = self.attack_.hyperparameters() if hasattr(self, "attack_") else {}
        return {**inner, "tuning": getattr(self, "tuning_", {"budget": self.tuning.budget})}

    # -- the two searches -------------------------------------------------------------------

    def _inversion_trials(
        self, access: Any, train: AttackerSamples, tune: AttackerSamples
    ) -> tuple[Callable[[dict[str, Any]], float], list[dict[str, Any]]]:
        self.attack_ = self.build({})
        self.attack_.fit(access, train)
        z = _tuning_features(access, self.attack_, tune)
        self.start_ = self._inversion_of(self.attack_)
        trials: list[dict[str, Any]] = []

        def evaluate(change: dict[str, Any]) -> float:
            _set_inversion(self.attack_, {**self.start_, **change})
            trials.append(_score(lambda: self.attack_.reconstruct(z), tune, change))
            return float(trials[-1][self.tuning.metric])

        return evaluate, trials

    def _training_trials(
        self, access: Any, train: AttackerSamples, tune: AttackerSamples
    ) -> tuple[Callable[[dict[str, Any]], float], list[dict[str, Any]]]:
        if not isinstance(access, QueryAccess):
            raise SplitleakError("training search is for the black-box inverse network")
        z = access.query(access.inputs.normalization.normalize(tune.pixels))
        self.fitted_: list[Any] = []
        trials: list[dict[str, Any]] = []

        def evaluate(change: dict[str, Any]) -> float:
            attack = self.build(change)
            attack.fit(access, train)
            self.fitted_.append(attack)
            trials.append(_score(lambda: attack.reconstruct(z), tune, change))
            return float(trials[-1][self.tuning.metric])

        return evaluate, trials

    @staticmethod
    def _inversion_of(attack: Any) -> dict[str, Any]:
        if isinstance(attack, WhiteBoxInversion):
            hp = attack.hyperparameters()
            return {k: v for k, v in hp.items() if k not in ("progress", "compute")}
        return dict(attack.inversion)


def _tuning_features(access: Any, attack: Any, tune: AttackerSamples) -> torch.Tensor:
    """The features the attacker can compute for its own tuning images, per threat model."""
    x = access.inputs.normalization.normalize(tune.pixels)
    with torch.no_grad():
        if isinstance(access, WhiteBoxAccess):
            return access.edge(x)  # f1 itself: the white-box attacker runs it
        if isinstance(access, QueryAccess):
            return access.query(x)  # held-out query pairs (counted)
        if isinstance(access, TailAccess):
            return attack.shadow_(x)  # the query-free attacker only has its shadow
    raise SplitleakError(f"tuning is not defined for {type(access).__name__}")


def _set_inversion(attack: Any, settings: dict[str, Any]) -> None:
    """Give a fitted rMLE attack other inversion settings (its forward model unchanged)."""
    if isinstance(attack, WhiteBoxInversion):
        for key, value in settings.items():
            setattr(attack, key, value)
        return
    attack.inversion = dict(settings)
    inverter = getattr(attack, "inverter_", None)
    if inverter is not None:
        for key, value in settings.items():
            setattr(inverter, key, value)


def _score(
    run: Callable[[], Reconstruction], tune: AttackerSamples, change: dict[str, Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    rec = run()
    scores = image_metrics(rec.images, tune.pixels)
    return {
        "change": change,
        "psnr": float(scores["psnr"].clamp(max=100.0).mean()),
        "ssim": float(scores["ssim"].mean()),
        "converged": rec.info.get("converged"),
        "seconds": round(time.perf_counter() - started, 3),
    }

"""The attacks splitleak knows: for each, its threat model, its data and its settings.

An entry says which access object the attack is granted (never chosen from a free-form
string elsewhere), whether it needs attacker samples (and labels), and which typed settings
it takes: ``inversion`` (rMLE, :class:`~splitleak.attacks.specs.InversionSpec`) and/or
``training`` (:class:`~splitleak.attacks.specs.TrainingSpec`). Its *primary* section is
where bare ``--set key=value`` overrides go; ``--set training.key=value`` and
``--set inversion.key=value`` address a section explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from splitleak.errors import unknown_name

ThreatModel = Literal["white-box", "black-box", "query-free", "data-free"]
Section = Literal["inversion", "training", "tuning", "data_free"]


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack.

    Attributes:
        name: the name used in configurations and on the command line.
        threat_model: which access it is granted (``white-box``: f1; ``black-box``: a
            counted oracle for f1; ``query-free``: f2 only; ``data-free``: f1's structure
            only, no weights, no queries, no data).
        needs_data: it trains on attacker samples; ``needs_labels``: and their labels.
        sections: the typed settings it accepts; the first is the primary one. ``tuning``
            (:class:`~splitleak.attacks.tuning.TuningSpec`): a search of its settings on
            the attacker's own data; ``data_free``: the UnSplit clone's settings.
        inversion_table: the presets file for its rMLE settings (``whitebox``/``surrogate``/
            ``hybrid``).
        description: one line for ``--help`` and reports.
    """

    name: str
    threat_model: ThreatModel
    needs_data: bool
    needs_labels: bool
    sections: tuple[Section, ...]
    inversion_table: str | None
    description: str


ATTACKS: dict[str, AttackEntry] = {
    entry.name: entry
    for entry in (
        AttackEntry(
            "whitebox", "white-box", False, False, ("inversion", "tuning"), "whitebox",
            "rMLE through the edge's own weights (ACSAC §4)",
        ),
        AttackEntry(
            "inverse-network", "black-box", True, False, ("training", "tuning"), None,
            "decoder trained on queried (f1(x), x) pairs (ACSAC §5)",
        ),
        AttackEntry(
            "model-reconstruction", "black-box", True, False,
            ("inversion", "training", "tuning"), "whitebox",
            "imitation of f1 from queries, then rMLE on it (ACSAC Table 8)",
        ),
        AttackEntry(
            "shadow", "query-free", True, True, ("inversion", "training", "tuning"),
            "surrogate", "shadow f1 trained through the frozen f2, then rMLE on it (ACSAC §6)",
        ),
        AttackEntry(
            "hybrid-whitebox", "white-box", True, False, ("inversion", "training", "tuning"),
            "hybrid", "decoder trained on the attacker's own (f1(x), x), then rMLE through "
            "f1 from the decoder's output",
        ),
        AttackEntry(
            "hybrid-blackbox", "black-box", True, False, ("inversion", "training", "tuning"),
            "hybrid", "decoder and imitation trained on queried pairs, then rMLE through "
            "the imitation from the decoder's output",
        ),
        AttackEntry(
            "unsplit", "data-free", False, False, ("data_free",), None,
            "UnSplit (Erdoğan et al., WPES 2022): input and a fresh clone of f1 optimised "
            "together until the clone's features match z",
        ),
    )
}  # fmt: skip


def get_attack(name: str) -> AttackEntry:
    """The entry for ``name``, or an error that lists the valid attacks."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise unknown_name("attack", name, list(ATTACKS)) from None


def attack_names() -> list[str]:
    return list(ATTACKS)


def register(entry: AttackEntry) -> None:
    """Add an attack (its builder must also be known to :mod:`splitleak.attacks.factory`)."""
    ATTACKS[entry.name] = entry

"""Sanity checks of an audit's results: numbers that are probably wrong, or weaker than they look.

:func:`check` reads the dict of :func:`splitleak.report.results.assemble` (nothing else) and
returns warnings ``{"code", "severity", "message", "cells"}``. Each code is explained, with
what to do about it, in ``docs/checks.md``. The order is fixed (by severity, then by the
order of :data:`CODES`, then by the order of the results), so a report is reproducible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

Warning_ = dict[str, Any]

#: Attacks that know less than the white-box attacker (no victim weights).
BLACK_BOX = ("inverse-network", "model-reconstruction", "shadow", "hybrid-blackbox", "unsplit")
#: Attacks that run an optimiser reporting ``converged``.
OPTIMISING = (
    "whitebox", "model-reconstruction", "shadow", "hybrid-whitebox", "hybrid-blackbox", "unsplit"
)  # fmt: skip

BLACKBOX_MARGIN = 0.02  # SSIM by which a black-box attack may beat the white-box one
AWARE_MARGIN = 0.05  # SSIM by which the defense-aware attack may trail the naive one
MIN_DRAWS = 2  # random-defense accuracy draws
MIN_IMAGES = 10  # images per attack summary
PUBLISHED_GAP_DB = 3.0  # PSNR below the paper's value that is reported

CODES = (
    "incomplete",
    "blackbox-beats-whitebox",
    "aware-weaker-than-naive",
    "not-converged",
    "single-draw-defense",
    "single-draw-attack",
    "few-images",
    "below-published",
)
#: Checks that fail a result outright (severity ``error``), run before :data:`CODES`.
FAILURES = ("data-overlap",)
_SEVERITY = {"error": -1, "warning": 0, "info": 1}
_LISTED = 3  # labels named in a one-line message before "and N more"


def _warning(code: str, message: str, cells: Iterable[str], severity: str = "warning") -> Warning_:
    return {"code": code, "severity": severity, "message": message, "cells": list(cells)}


def _names(rows: list[dict[str, Any]]) -> str:
    """``a, b, c and 4 more`` from the rows' labels."""
    labels = [str(r.get("label", r.get("key", "?"))) for r in rows]
    text = ", ".join(labels[:_LISTED])
    return text + (f" and {len(labels) - _LISTED} more" if len(labels) > _LISTED else "")


def _attack_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return list(results.get("attacks") or [])


def _incomplete(results: dict[str, Any]) -> list[Warning_]:
    if results.get("complete", True):
        return []
    missing = list(results.get("missing") or [])
    cells = results.get("manifest", {}).get("cells", [])
    keys = [c["key"] for c in cells if c.get("label") in set(missing)]
    shown = ", ".join(missing[:_LISTED]) + (
        f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    )
    return [
        _warning(
            "incomplete",
            f"{len(missing)} cell(s) of the grid are missing ({shown}); "
            "rerun the same audit command to compute them",
            keys,
        )
    ]


def _blackbox_beats_whitebox(results: dict[str, Any]) -> list[Warning_]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in _attack_rows(results):
        ident = (row["split"], tuple(row.get("defenses") or ()), bool(row.get("adaptive")))
        groups[(*ident, row.get("victim_seed", 0))].append(row)
    out = []
    for (split, defenses, _, _), rows in groups.items():
        for white in (r for r in rows if r["attack"] == "whitebox"):
            better = [
                r
                for r in rows
                if r["attack"] in BLACK_BOX and r["ssim"] > white["ssim"] + BLACKBOX_MARGIN
            ]
            if not better:
                continue
            best = max(better, key=lambda r: r["ssim"])
            where = f"at {split}" + (f" vs {', '.join(defenses)}" if defenses else "")
            out.append(
                _warning(
                    "blackbox-beats-whitebox",
                    f"{where}: {best['label']} reaches SSIM {best['ssim']:.3f} but the white-box "
                    f"attack only {white['ssim']:.3f}; its optimiser is underpowered (raise steps "
                    "or use the strong profile)",
                    [white["key"], *(r["key"] for r in better)],
                )
            )
    return out


def _aware_weaker_than_naive(results: dict[str, Any]) -> list[Warning_]:
    pairs: dict[tuple[Any, ...], dict[bool, dict[str, Any]]] = defaultdict(dict)
    for row in _attack_rows(results):
        if row.get("defenses"):
            ident = (
                row["split"],
                row["attack"],
                row.get("attacker_data"),
                row.get("shadow_arch"),
                tuple(row["defenses"]),
            )
            pairs[ident][bool(row.get("adaptive"))] = row
    out = []
    for (split, attack, _, _, defenses), modes in pairs.items():
        naive, aware = modes.get(False), modes.get(True)
        if naive is None or aware is None or aware["ssim"] >= naive["ssim"] - AWARE_MARGIN:
            continue
        out.append(
            _warning(
                "aware-weaker-than-naive",
                f"{attack} at {split} vs {', '.join(defenses)}: defense-aware SSIM "
                f"{aware['ssim']:.3f} < naive {naive['ssim']:.3f}; the adaptive attack is "
                "misconfigured, take the naive number as the worst case",
                [naive["key"], aware["key"]],
            )
        )
    return out


def _not_converged(results: dict[str, Any]) -> list[Warning_]:
    rows = [
        r
        for r in _attack_rows(results)
        if r["attack"] in OPTIMISING and r.get("converged") is False
    ]
    if not rows:
        return []
    return [
        _warning(
            "not-converged",
            f"{len(rows)} optimising attack(s) stopped before "
            f"converging ({_names(rows)}); their leakage is a lower bound",
            [r["key"] for r in rows],
        )
    ]


def _random(defenses: Iterable[str]) -> bool:
    """Every defense family is random unless its level is 0 (the identity)."""
    levels = []
    for spec in defenses:
        parts = str(spec).split(":")
        try:
            levels.append(float(parts[2]))
        except (IndexError, ValueError):
            levels.append(1.0)  # unreadable: assume it draws noise
    return any(level != 0 for level in levels)


def _single_draw_defense(results: dict[str, Any]) -> list[Warning_]:
    keys = {
        (c["split"], tuple(c.get("defenses") or ())): c["key"]
        for c in results.get("manifest", {}).get("cells", [])
        if c.get("kind") == "accuracy"
    }
    rows = [
        a
        for a in results.get("accuracy") or []
        if a.get("defenses") and _random(a["defenses"]) and (a.get("n") or 0) < MIN_DRAWS
    ]
    if not rows:
        return []
    names = [f"{', '.join(a['defenses'])} at {a['split']}" for a in rows]
    shown = ", ".join(names[:_LISTED]) + (
        f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    )
    return [
        _warning(
            "single-draw-defense",
            f"{len(rows)} random defense(s) measured with fewer "
            f"than {MIN_DRAWS} accuracy draws ({shown}); the accuracy has no "
            "confidence interval",
            [k for a in rows if (k := keys.get((a["split"], tuple(a["defenses"]))))],
        )
    ]


def _stochastic(defenses: Iterable[str]) -> bool:
    """Whether any defense draws fresh randomness (learned noise and NoPeek do not)."""
    from splitleak.defenses import parse_defense
    from splitleak.defenses.deploy import is_stochastic
    from splitleak.errors import SplitleakError

    for spec in defenses:
        try:
            if is_stochastic(parse_defense(str(spec))):
                return True
        except SplitleakError:
            return True  # unreadable: assume it draws noise
    return False


def _single_draw_attack(results: dict[str, Any]) -> list[Warning_]:
    rows = [
        r
        for r in _attack_rows(results)
        if r.get("defenses") and _stochastic(r["defenses"]) and (r.get("draws") or 1) < MIN_DRAWS
    ]
    if not rows:
        return []
    return [
        _warning(
            "single-draw-attack",
            f"{len(rows)} attack score(s) against a random defense come from one defense "
            f"draw ({_names(rows)}); the SSIM may be a lucky or unlucky draw (score over "
            "several draws with `splitleak plan-defenses`)",
            [r["key"] for r in rows],
        )
    ]


def _few_images(results: dict[str, Any]) -> list[Warning_]:
    rows = [r for r in _attack_rows(results) if (r.get("n") or 0) < MIN_IMAGES]
    if not rows:
        return []
    return [
        _warning(
            "few-images",
            f"{len(rows)} attack summaries use fewer than {MIN_IMAGES} "
            f"images ({_names(rows)}); their confidence intervals are unreliable",
            [r["key"] for r in rows],
        )
    ]


def _below_published(results: dict[str, Any]) -> list[Warning_]:
    rows = [
        r
        for r in _attack_rows(results)
        if r.get("published") and r["psnr"] < r["published"][0] - PUBLISHED_GAP_DB
    ]
    if not rows:
        return []
    gaps = ", ".join(
        f"{r['label']} {r['psnr']:.1f} vs {r['published'][0]:.1f} dB" for r in rows[:_LISTED]
    )
    more = f" and {len(rows) - _LISTED} more" if len(rows) > _LISTED else ""
    return [
        _warning(
            "below-published",
            f"{len(rows)} cell(s) more than {PUBLISHED_GAP_DB:g} dB "
            f"PSNR below the paper ({gaps}{more}); a reproduction gap (weaker attack "
            "budget), not a defense",
            [r["key"] for r in rows],
            severity="info",
        )
    ]


def data_overlap(record: dict[str, Any]) -> dict[str, int]:
    """How many evaluation images a stored result's attacker, tuning or evaluator data hold.

    Reads the record's provenance: ``evaluation`` (source and indices of the scored images),
    ``attacker_data``, ``tuning.tuning_data`` and the recognisability evaluator's training
    data. Data from another source (the training split, another dataset, noise) cannot
    overlap; an evaluator trained on the evaluation source counts all its images.
    """
    prov = record.get("provenance") or {}
    evaluation = prov.get("evaluation") or {}
    source = evaluation.get("source")
    if source is None:
        return {}
    scored = set(evaluation.get("indices") or [])
    out: dict[str, int] = {}
    for name, data in (
        ("attacker", prov.get("attacker_data")),
        ("tuning", (prov.get("tuning") or {}).get("tuning_data")),
    ):
        if data and data.get("source") == source and data.get("indices") is not None:
            out[name] = len(scored & set(data["indices"]))
    trained = ((prov.get("recognisability") or {}).get("evaluator") or {}).get("trained_on") or {}
    if trained.get("source") == source:
        out["evaluator"] = int(trained.get("n") or 1)
    return out


def _data_overlap(results: dict[str, Any]) -> list[Warning_]:
    rows = [r for r in _attack_rows(results) if any((r.get("overlap") or {}).values())]
    if not rows:
        return []
    parts = sorted({k for r in rows for k, v in (r.get("overlap") or {}).items() if v})
    return [
        _warning(
            "data-overlap",
            f"{len(rows)} result(s) used evaluation images as {' / '.join(parts)} data "
            f"({_names(rows)}): their scores peeked at the answers and are not valid; rerun "
            "with attacker and tuning data disjoint from the evaluation images",
            [r["key"] for r in rows],
            severity="error",
        )
    ]


def record_row(record: dict[str, Any], *, key: str = "", label: str = "") -> dict[str, Any]:
    """The row :func:`check` reads, from one stored attack record (a cell or a run).

    ``record`` has ``config``, ``summary``, ``provenance`` (and ``per_image``), as
    :func:`splitleak.sweep.attack_cell` stores them.
    """
    cfg, s = record.get("config") or {}, record["summary"]
    info = (record.get("provenance") or {}).get("reconstruction_info") or {}
    defenses = list(cfg.get("defenses") or [])
    default = f"{cfg.get('attack')} @ {cfg.get('split')}" + (
        f" vs {', '.join(defenses)}" + (" (aware)" if cfg.get("adaptive") else "")
        if defenses
        else ""
    )
    return {
        "key": key or record.get("key", ""),
        "label": label or default,
        "section": "defenses" if cfg.get("defenses") else "attacks",
        **{k: cfg.get(k) for k in ("split", "attack", "attacker_data", "shadow_arch", "profile")},
        "adaptive": bool(cfg.get("adaptive")),
        "defenses": list(cfg.get("defenses") or []),
        "psnr": s["psnr"]["mean"],
        "ssim": s["ssim"]["mean"],
        "n": s["psnr"]["n"],
        "converged": info.get("converged"),
        "overlap": data_overlap(record),
        "published": None,
    }


def check_records(records: list[dict[str, Any]]) -> list[Warning_]:
    """The audit's checks on stored attack records (``attack``, ``defend``, ``sweep-splits``)."""
    rows = [record_row(r, label=r.get("label", "")) for r in records]
    return check({"attacks": rows, "complete": True, "accuracy": [], "manifest": {}})


_CHECKS: dict[str, Callable[[dict[str, Any]], list[Warning_]]] = {
    "data-overlap": _data_overlap,
    "incomplete": _incomplete,
    "blackbox-beats-whitebox": _blackbox_beats_whitebox,
    "aware-weaker-than-naive": _aware_weaker_than_naive,
    "not-converged": _not_converged,
    "single-draw-defense": _single_draw_defense,
    "single-draw-attack": _single_draw_attack,
    "few-images": _few_images,
    "below-published": _below_published,
}


def check(results: dict[str, Any]) -> list[Warning_]:
    """Every warning about ``results`` (from ``assemble``): errors, warnings, then infos.

    Returns:
        Dicts with ``code`` (one of :data:`FAILURES` or :data:`CODES`), ``severity``
        (``"error"``: the result is invalid; ``"warning"`` or ``"info"``), ``message`` (one
        line) and ``cells`` (the store keys concerned).
    """
    found = [w for code in (*FAILURES, *CODES) for w in _CHECKS[code](results)]
    return sorted(found, key=lambda w: _SEVERITY[w["severity"]])  # stable: keeps CODES order

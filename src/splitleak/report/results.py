"""Assemble an audit's numbers from its manifest and stored cells alone.

Everything the report shows is derived here, from ``audit.json`` and ``cells/``; nothing is
recomputed from a model, so ``splitleak report DIR`` rebuilds the same report anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from splitleak.checks import data_overlap
from splitleak.planner import Constraints, SplitCost, plan_record, plan_rows
from splitleak.report.published import ACCURACY, published
from splitleak.store import ResultStore

RECOGNISABLE_SSIM, RECOGNISABLE_PSNR, HIDDEN_SSIM = 0.3, 10.0, 0.25
_SEVERITY = {"hidden": 0, "borderline": 1, "exposed": 2}
#: The verdict rules, in the order that names the deciding one when several agree.
RULES = ("SSIM", "evaluator", "identification")


def verdict(psnr: float, ssim: float) -> str:
    """Exposed above SSIM 0.3, hidden below 0.25, borderline between (the papers' SSIM reading).

    The papers also call PSNR > 10 dB recognisable, but on MNIST a blurred mean digit
    already scores 11–12 dB, so PSNR alone would flag every split point; it is reported,
    not used for the verdict. ``psnr`` is kept in the signature for callers that show it.
    """
    del psnr
    if ssim > RECOGNISABLE_SSIM:
        return "exposed"
    return "hidden" if ssim < HIDDEN_SSIM else "borderline"


def verdicts(ssim: float, recognisability: dict[str, Any] | None) -> dict[str, Any]:
    """The SSIM rule beside the evaluator and identification rules; the worst one decides.

    Returns ``verdict`` (the most severe of the rules' verdicts), ``decided_by`` (the
    first rule, in :data:`RULES` order, that gives it) and ``rules`` (each rule's verdict
    and score). Without recognisability measures only the SSIM rule applies.
    """
    from splitleak.recognisability import recognition_verdict

    rules: dict[str, dict[str, Any]] = {"SSIM": {"score": ssim, "verdict": verdict(0.0, ssim)}}
    rules.update(recognition_verdict(recognisability))
    worst = max(rules.values(), key=lambda r: _SEVERITY[r["verdict"]])["verdict"]
    decided = next(name for name in RULES if name in rules and rules[name]["verdict"] == worst)
    return {"verdict": worst, "decided_by": decided, "rules": rules}


def _published_cell(arch: str, cell: dict[str, Any]) -> list[float] | None:
    row: Any = None
    if cell["attack"] == "inverse-network":
        row = cell["attacker_data"]
    elif cell["attack"] == "shadow":
        row = (cell["attacker_data"], cell["shadow_arch"])
        if cell["attacker_data"] not in ("same-set", "same-distribution"):
            return None
    ref = published(cell["attack"], arch, cell["split"], row)
    return list(ref) if ref else None


def assemble(directory: Path) -> dict[str, Any]:
    """Every number of an audit: attack table, defenses, split sweep, plan and verdicts."""
    from splitleak.audit.pipeline import read_manifest

    manifest = read_manifest(directory)
    store = ResultStore(directory)
    arch = manifest["victim"]["architecture"]
    cells = [{**c, "stored": store.has(c["key"])} for c in manifest["cells"]]
    records = {c["key"]: store.get(c["key"]) for c in cells if c["stored"]}
    attacks = [
        _attack_row(c, records[c["key"]], arch)
        for c in cells
        if c["kind"] == "attack" and c["stored"]
    ]
    accuracy = {
        (c["split"], tuple(c["defenses"])): records[c["key"]]["summary"]
        for c in cells
        if c["kind"] == "accuracy" and c["stored"]
    }
    return {
        "manifest": manifest,
        "complete": all(c["stored"] for c in cells),
        "missing": [c["label"] for c in cells if not c["stored"]],
        "attacks": attacks,
        "defenses": _defense_points(attacks, accuracy),
        "accuracy": [{"split": s, "defenses": list(d), **v} for (s, d), v in accuracy.items()],
        "splits": _split_verdicts(attacks, manifest),
        "plan": _plan(attacks, accuracy, manifest),
        "joint_plan": _joint_plan(attacks, accuracy, manifest),
        "across_victims": _across_victims(attacks, manifest),
        "published_accuracy": ACCURACY.get(arch),
    }


def _attack_row(cell: dict[str, Any], record: dict[str, Any], arch: str) -> dict[str, Any]:
    s = record["summary"]
    info = record["provenance"].get("reconstruction_info", {})
    recog = record["provenance"].get("recognisability")
    decision = verdicts(s["ssim"]["mean"], recog)
    return {
        **{
            k: cell.get(k)
            for k in (
                "key",
                "label",
                "section",
                "split",
                "attack",
                "attacker_data",
                "shadow_arch",
                "adaptive",
                "defenses",
                "profile",
            )
        },
        "victim_seed": cell.get("victim_seed", 0),
        "psnr": s["psnr"]["mean"],
        "psnr_ci95": s["psnr"]["ci95"],
        "ssim": s["ssim"]["mean"],
        "ssim_ci95": s["ssim"]["ci95"],
        "n": s["psnr"]["n"],
        "queries": record["queries_used"],
        "seconds": sum(record["timings"].values()),
        "converged": info.get("converged"),
        "published": _published_cell(arch, cell) if not cell.get("defenses") else None,
        "overlap": data_overlap(record),
        **_recognisability_columns(recog),
        "verdict": decision["verdict"],
        "decided_by": decision["decided_by"],
    }


def _recognisability_columns(record: dict[str, Any] | None) -> dict[str, Any]:
    if not record or "skipped" in record:
        return {"evaluator_accuracy": None, "evaluator_accuracy_original": None,
                "identification": None}  # fmt: skip
    return {
        "evaluator_accuracy": record["evaluator_accuracy"],
        "evaluator_accuracy_original": record["evaluator_accuracy_original"],
        "identification": max(record["identification_pixel"], record["identification_features"]),
    }


def _defense_points(
    attacks: list[dict[str, Any]], accuracy: dict[Any, Any]
) -> list[dict[str, Any]]:
    points = []
    for row in attacks:
        if row["section"] != "defenses":
            continue
        acc = accuracy.get((row["split"], tuple(row["defenses"])))
        family, location, level = row["defenses"][0].split(":")[:3]
        points.append(
            {
                **row,
                "family": family,
                "location": location,
                "level": float(level),
                "label": f"{family} on {location}",
                "accuracy": acc["mean"] if acc else None,
                "accuracy_ci95": acc["ci95"] if acc else None,
                "accuracy_draws": acc["n"] if acc else None,
            }
        )
    # Each line starts at the undefended point of the same split and attack (the first
    # attacker-data variant, which is the one the defense cells use).
    baselines: dict[tuple[str, str], dict[str, Any]] = {}
    for row in attacks:
        if row["section"] == "attacks":
            baselines.setdefault((row["split"], row["attack"]), row)
    for label, split, attack in sorted({(p["label"], p["split"], p["attack"]) for p in points}):
        base = baselines.get((split, attack))
        acc = accuracy.get((split, ()))
        if base is not None:
            family, location = label.split(" on ")
            points.append(
                {
                    **base,
                    "family": family,
                    "location": location,
                    "level": 0.0,
                    "label": label,
                    "adaptive": False,
                    "defenses": [],
                    "accuracy": acc["mean"] if acc else None,
                    "accuracy_ci95": None,
                    "accuracy_draws": 1,
                }
            )
    return points


def _split_verdicts(
    attacks: list[dict[str, Any]], manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    order = [c["split"] for c in manifest["split_costs"]]
    rows = []
    for split in order:
        mine = [a for a in attacks if a["split"] == split and a["section"] == "attacks"]
        if not mine:
            continue
        # The worst attack: the most severe verdict, then the highest SSIM.
        worst = max(mine, key=lambda a: (_SEVERITY[a["verdict"]], a["ssim"]))
        rows.append(
            {
                "split": split,
                "depth": order.index(split),
                "worst_attack": worst["label"],
                "psnr": max(a["psnr"] for a in mine),
                "ssim": max(a["ssim"] for a in mine),
                "verdict": worst["verdict"],
                "decided_by": worst["decided_by"],
            }
        )
    return rows


_SAME_ATTACK = ("split", "attack", "attacker_data", "shadow_arch", "profile")


def _across_victims(
    attacks: list[dict[str, Any]], manifest: dict[str, Any]
) -> dict[str, Any] | None:
    """Each undefended attack and each split's worst case, per victim and mean ± 95 % CI.

    None when the audit has one victim. A row's ``victims`` counts the victims whose cell
    is stored; its CI needs two of them. The worst case of a victim at a split is its
    highest-SSIM attack there, as in the verdict table.
    """
    seeds = [v["seed"] for v in manifest.get("victims") or []]
    if len(seeds) < 2:
        return None
    rows = [a for a in attacks if a["section"] in ("attacks", "victims")]
    groups: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for a in rows:
        groups.setdefault(tuple(a[k] for k in _SAME_ATTACK), {})[a["victim_seed"]] = a
    table = []
    for ident, by_seed in groups.items():
        first = by_seed.get(seeds[0]) or next(iter(by_seed.values()))
        label = _attack_label(first)
        table.append(
            {**dict(zip(_SAME_ATTACK, ident, strict=True)), "label": label}
            | _per_victim({s: by_seed[s] for s in seeds if s in by_seed})
        )
    worst = []
    for split in dict.fromkeys(a["split"] for a in rows):
        best: dict[int, dict[str, Any]] = {}
        for a in rows:
            if a["split"] == split and a["ssim"] > best.get(a["victim_seed"], {"ssim": -2})["ssim"]:
                best[a["victim_seed"]] = a
        found = {s: best[s] for s in seeds if s in best}
        worst.append(
            {
                "split": split,
                "attacks": {s: _attack_label(a) for s, a in found.items()},
            }
            | _per_victim(found)
        )
    return {"seeds": seeds, "table": table, "worst_case": worst}


def _attack_label(row: dict[str, Any]) -> str:
    """A row's label without the victim suffix that further victims' cells carry."""
    return str(row["label"]).split(" · victim seed")[0]


def _per_victim(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """PSNR and SSIM of one row per victim: the per-victim means and their mean ± 95 % CI."""
    from splitleak.metrics import summarize

    out: dict[str, Any] = {"victims": len(rows)}
    for metric in ("psnr", "ssim"):
        values = [r[metric] for r in rows.values()]
        out[f"{metric}_per_victim"] = {str(s): r[metric] for s, r in rows.items()}
        out[metric] = summarize(values).as_dict()
    return out


def _costs(manifest: dict[str, Any]) -> list[SplitCost]:
    return [
        SplitCost(**{**c, "feature_shape": tuple(c["feature_shape"])})
        for c in manifest["split_costs"]
    ]


def _constraints(manifest: dict[str, Any]) -> Constraints:
    cfg = manifest["config"]
    return Constraints(
        max_edge_macs=cfg.get("max_edge_macs"),
        max_feature_bytes=cfg.get("max_feature_bytes"),
        max_leakage=cfg.get("max_leakage"),
        min_accuracy=cfg.get("min_accuracy"),
    )


def _plan(
    attacks: list[dict[str, Any]], accuracy: dict[Any, Any], manifest: dict[str, Any]
) -> dict[str, Any]:
    costs = _costs(manifest)
    leakage: dict[str, float] = {}
    for a in attacks:
        if a["section"] == "attacks":
            leakage[a["split"]] = max(leakage.get(a["split"], float("-inf")), a["ssim"])
    acc = {s: v["mean"] for (s, d), v in accuracy.items() if not d}
    rows = plan_rows([c for c in costs if c.split in leakage], leakage=leakage, accuracy=acc)
    if not rows:
        return {"rows": [], "recommended": None, "reason": "no split point was attacked yet"}
    return plan_record(rows, _constraints(manifest))


def _joint_plan(
    attacks: list[dict[str, Any]], accuracy: dict[Any, Any], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Split point and defense chosen together, from the audit's cells alone.

    The configurations are every attacked split point without a defense (its leakage: the
    worst of every attack run there) and every defense level the audit measured at its
    defense split (the worst of the defense attacks, naive and defense-aware). Only a
    configuration whose accuracy was measured enters, so that the planner never recommends
    one of unknown accuracy. The record is :func:`splitleak.joint_planner.plan_record`'s,
    which ``splitleak edge --from-plan AUDIT_DIR`` deploys.
    """
    from splitleak.joint_planner import JointRow, defense_param_bytes, plan
    from splitleak.joint_planner import plan_record as joint_record

    costs = {c.split: c for c in _costs(manifest)}
    entries: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for a in attacks:
        if a["section"] in ("attacks", "defenses"):
            config = (a["split"], tuple(a["defenses"] or ()))
            entries.setdefault(config, []).append(
                {
                    "attack": a["attack"],
                    "aware": bool(a["adaptive"]),
                    "psnr": a["psnr"],
                    "ssim": a["ssim"],
                    "key": a["key"],
                }
            )
    rows = [
        JointRow(
            cost=costs[split],
            accuracy=accuracy[(split, specs)]["mean"],
            leakage=max(e["ssim"] for e in found),
            defenses=specs,
            attacks=tuple(found),
            defense_param_bytes=defense_param_bytes(specs, costs[split]),
        )
        for (split, specs), found in entries.items()
        if split in costs and (split, specs) in accuracy
    ]
    if not rows:
        return {"rows": [], "recommended": None, "reason": "no configuration has both "
                "its accuracy and an attack stored yet"}  # fmt: skip
    return joint_record(plan(rows, _constraints(manifest)), source="audit")

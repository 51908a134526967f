"""The audit report: one self-contained HTML page rendered from the stored results alone.

It reads only what :func:`~splitleak.report.results.assemble` derives from ``audit.json`` and
``cells/``; images are ``data:`` URIs and the CSS is inline, so the page opens offline; the
same stored results give byte-identical ``report.html`` and ``results.json``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from dataclasses import fields
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch

from splitleak.checks import check
from splitleak.planner import PlanRow, SplitCost, format_table
from splitleak.records import write_json, write_text
from splitleak.report.cell_grids import grid_from_cells
from splitleak.report.planner_plot import plot_plan
from splitleak.report.plots import split_sweep_figure, tradeoff_figure
from splitleak.report.results import HIDDEN_SSIM, RECOGNISABLE_PSNR, RECOGNISABLE_SSIM, assemble
from splitleak.store import ResultStore

Row = dict[str, Any]
GRID_IMAGES = 10  # images per grid row, whatever the number of evaluated images
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0 auto;
 max-width:1180px;padding:0 24px 48px;color:#1f2328;line-height:1.45}h1{font-size:1.6em}
header{border-bottom:2px solid #d0d7de}h2{border-bottom:1px solid #d0d7de;margin-top:36px}
nav a{margin-right:14px;color:#0969da;text-decoration:none}.muted{color:#59636e;font-size:.9em}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.86em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tr:nth-child(even){background:#fafbfc}tr.rec td{background:#fff8c5}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{padding:1px 8px;border-radius:10px;font-weight:600;white-space:nowrap}
.v-exposed{background:#ffebe9;color:#a40e26}.v-borderline{background:#fff8c5;color:#7d4e00}
.v-hidden{background:#dafbe1;color:#116329}.v-warning{color:#a40e26}.v-info{color:#0969da}
.v-error{background:#cf222e;color:#fff}
.banner{border:2px solid #cf222e;background:#ffebe9;padding:10px 16px;border-radius:6px}
.ok{border:1px solid #1a7f37;background:#dafbe1;padding:6px 12px;border-radius:6px}
figure{margin:12px 0}img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#59636e}
pre{background:#f6f8fa;padding:8px;margin:0;font-size:.85em;white-space:pre-wrap;
 overflow-wrap:anywhere}dl{display:grid;grid-template-columns:max-content minmax(0,1fr);
 gap:4px 16px}dt{font-weight:600}dd{margin:0}
"""
_COLUMNS = {  # header=spec per column (spec: see _cell)
    "splits": "split point=split|depth=depth|worst attack=worst_attack|PSNR (dB)=psnr:2|"
    "SSIM=ssim:3|verdict=verdict!|decided by=decided_by",
    "attacks": "attack=attack|split=split|attacker data / shadow net=variant|images=n|"
    "PSNR (dB)=psnr±2|paper PSNR=paper_psnr:2|SSIM=ssim±3|paper SSIM=paper_ssim:3|"
    "queries=queries_text|time (s)=seconds:1|converged=converged_text|"
    "evaluator accuracy (originals)=evaluator_text|identified=identification:2|"
    "verdict=verdict!|decided by=decided_by",
    "defenses": "attack=attack|defense=label|level=level_text|accuracy=accuracy±3|"
    "draws=accuracy_draws|naive PSNR=naive_psnr:2|naive SSIM=naive_ssim:3|"
    "aware PSNR=aware_psnr:2|aware SSIM=aware_ssim:3|worse for the defender=worse",
    "warnings": "severity=severity!|code=code|message=message|cells=cell_labels",
    "victims": "split=split|attack=label|victims=victims|SSIM per victim=ssim_each|"
    "SSIM=ssim±3|PSNR per victim=psnr_each|PSNR (dB)=psnr±2",
}
_TEXT = {  # prose of the page; {placeholders} are filled per audit
    "rule": f"Verdict: exposed above {RECOGNISABLE_SSIM:g} SSIM (recognisable, He et al.), "
    f"hidden below {HIDDEN_SSIM:g} SSIM, borderline between. The papers' other rule, PSNR > "
    f"{RECOGNISABLE_PSNR:g} dB, is not used: a blurred mean digit already passes it on MNIST. "
    "PSNR is the best at the split point. Two recognition rules stand beside it: an "
    "independent evaluator classifier (another architecture, trained on the training split) "
    "recognises the reconstructions (its accuracy, from chance to its accuracy on the "
    "originals, normalised: exposed at 0.5 or more, hidden below 0.2), and identification "
    "(the share of reconstructions whose nearest evaluated image, in pixels or evaluator "
    "features, is their own original, normalised between chance and 1: exposed at 0.5 or "
    "more, hidden below 0.1). The most severe rule decides ('decided by'); the worst attack "
    "is the one with the most severe verdict, then the highest SSIM.",
    "exposed": "the cloud rebuilt recognisable inputs: do not cut there without a defense",
    "borderline": "the reconstructions are blurred, but coarse shapes may still show",
    "hidden": "no attack came near a recognisable image",
    "caveat": "These verdicts hold for the '{budget}' budget's attacks only: a stronger attacker "
    "can only do better, so hidden means that no attack here succeeded, not that none can.",
    "attacks": "± is the 95% confidence interval over the images. Paper: He, Zhang and Lee "
    "(ACSAC 2019), in the same setting, where it has one.",
    "defenses": "Defenses at split point {split}. Naive: the attack ignores the defense; aware: "
    "it is adapted to it. The worse of the two is the defender's real exposure.",
    "pareto": "★: the Pareto front (no other split point has at once fewer edge MACs and bytes, "
    "lower leakage and higher accuracy); highlighted: the recommendation. Leakage: the worst "
    "SSIM over the attacks at the split point.",
    "no-limits": "No limits were given, so this is the least leaky configuration whatever its "
    "accuracy: run the audit again with --min-accuracy (and --max-leakage, --max-edge-macs, "
    "--max-bytes) into another --out folder for a recommendation you can deploy (with a "
    "shared --store, it reuses every finished cell).",
    "victims": "The undefended attacks repeated on {n} victims of the same architecture and "
    "recipe, trained with seeds {seeds}: the mean over each victim's images, then their mean "
    "± the 95% confidence interval across victims (Student t; none for a single stored "
    "victim). The rest of this report (verdicts, defenses, planner) is for the first victim.",
    "one-victim": "One victim: run the standard or paper budget, or --victims N, for the "
    "spread of each number across victims trained with other seeds.",
    "joint": "Every attacked split point without a defense (leakage: the worst SSIM of every "
    "attack there) and every defense level measured at the defense split (the worst of the "
    "defense attacks, naive and defense-aware), with the test accuracy under it. ★: the Pareto "
    "front over accuracy, leakage, edge MACs, edge parameter memory and bytes sent; "
    "highlighted: the recommendation (lowest leakage among the configurations that meet the "
    "limits). A defended row is only as strong as the defense attacks of the budget.",
}


class Raw(str):
    """Text that is already HTML (built here from escaped parts); tables do not escape it."""


def _esc(value: object) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value))


def _tag(name: str, text: object, cls: str = "") -> Raw:
    """``<name class=cls>text</name>`` with ``text`` escaped."""
    attr = f' class="{_esc(cls)}"' if cls else ""
    return Raw(f"<{name}{attr}>{_esc(text)}</{name}>")


def _num(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; — for None, ∞ for infinity."""
    if value is None or math.isnan(value):
        return "—" if value is None else "nan"
    return ("∞" if value > 0 else "−∞") if math.isinf(value) else f"{value:.{digits}f}"


def _cell(row: Row, spec: str) -> object:
    """What a column spec shows of ``row``: ``key``, ``key:N`` (N decimals), ``key±N`` (and
    ± its ``key_ci95`` where known) or ``key!`` (a coloured badge); None shows as —."""
    key, digits = [*spec.replace("±", ":").split(":"), ""][:2]
    ci = row.get(f"{key}_ci95") if "±" in spec else None
    if digits:
        text = _num(row.get(key), int(digits))
        return text if ci is None else f"{text} ± {_num(ci, int(digits))}"
    if key.endswith("!"):
        return _tag("span", row[key[:-1]], f"v v-{row[key[:-1]]}")
    return "—" if row.get(key) is None else row[key]


def _table(columns: str, rows: Iterable[Row], highlight: int = -1) -> str:
    """An HTML table; ``columns``: ``header=spec|...`` (see :func:`_cell`); text is escaped."""
    pairs = [c.split("=") for c in columns.split("|")]
    body = "<tr>" + "".join(_tag("th", name) for name, _ in pairs) + "</tr>\n"
    for i, row in enumerate(rows):
        body += '<tr class="rec">' if i == highlight else "<tr>"
        for value in (_cell(row, spec) for _, spec in pairs):
            text = "" if isinstance(value, Raw) else str(value)  # short numbers: right-aligned
            numeric = text[:1] in tuple("0123456789∞−") and len(text) < 20
            body += _tag("td", value, "n") if numeric else _tag("td", value)
        body += "</tr>\n"
    return f'<div class="scroll"><table>\n{body}</table></div>'


def _dl(items: dict[str, str]) -> str:
    """A definition list; the values are HTML already."""
    return "<dl>" + "".join(f"<dt>{_esc(k)}</dt><dd>{v}</dd>" for k, v in items.items()) + "</dl>"


def _figure(path: Path, caption: str) -> str:
    """The PNG at ``path`` embedded as a data URI, with a caption."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    img = f'<img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
    return f"<figure>{img}{_tag('figcaption', caption)}</figure>"


def json_safe(obj: Any) -> Any:
    """``obj`` with tuples as lists and non-finite floats as the strings "inf", "-inf", "nan"."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return str(obj) if isinstance(obj, float) and not math.isfinite(obj) else obj


class _Preview(ResultStore):
    """A read view of an audit's store that gives only the first ``limit`` images of a cell."""

    limit = GRID_IMAGES

    def tensors(self, key: str) -> dict[str, torch.Tensor]:
        return {k: v[: self.limit] for k, v in super().tensors(key).items()}


def _variant(row: Row) -> str:
    """The attacker's knowledge beyond the attack's name: its data and shadow network."""
    net = row["attack"] in ("shadow", "model-reconstruction")
    text = f"{row['attacker_data']}" + (f", {row['shadow_arch']} net" if net else "")
    return "" if row["attack"] == "whitebox" else text


def _main_attacks(results: Row) -> list[Row]:
    return [a for a in results["attacks"] if a["section"] == "attacks"]


def _banner(results: Row) -> str:
    """A green line for a complete audit; else a red banner with the missing cells."""
    n, config = len(results["manifest"]["cells"]), results["manifest"]["config"]
    if results["complete"]:
        return _tag("p", f"Complete: all {n} cells of the grid are stored.", "ok")
    flag = {"max_feature_bytes": "max-bytes"}  # the CLI's option names, where they differ
    options = [f"--{flag.get(k, k.replace('_', '-'))} {v}" for k, v in config.items() if v]
    command, missing = " ".join(["splitleak audit", *options, "--out DIR"]), results["missing"]
    items = "".join(_tag("li", label) for label in missing[:20])
    items += _tag("li", f"… and {len(missing) - 20} more") if len(missing) > 20 else ""
    return (
        f'<div class="banner" role="alert"><strong>Incomplete audit:</strong> {len(missing)} of '
        f"{n} cells are missing and the numbers below leave them out:<ul>{items}</ul>Rerun the "
        f"same command (DIR: this report's folder) to compute them:{_tag('pre', command)}</div>"
    )


def _reading(results: Row) -> str:
    """A plain-language paragraph on the verdict table."""
    splits, plan = results["splits"], results["plan"]
    if not splits:
        return "No attack has finished yet, so this report cannot say what the cloud can rebuild."
    text = [f"{len(splits)} split point(s) were attacked."]
    for verdict in ("exposed", "borderline", "hidden"):
        if where := ", ".join(s["split"] for s in splits if s["verdict"] == verdict):
            text.append(f"At {where} {_TEXT[verdict]} ({verdict}).")
    if plan.get("recommended"):
        text.append(f"The planner recommends cutting after {plan['recommended']}.")
    text.append(_TEXT["caveat"].format(budget=results["manifest"]["budget"]["name"]))
    if any(w["code"] in ("not-converged", "blackbox-beats-whitebox") for w in results["warnings"]):
        text.append("Some attacks look underpowered (see Warnings): leakage may be higher.")
    return " ".join(text)


def _summary(results: Row) -> str:
    m, pub = results["manifest"], results["published_accuracy"]
    victim, budget = m["victim"], m["budget"]
    accuracy = _num(victim.get("test_accuracy"), 4) + (f" (published: {pub:.4f})" if pub else "")
    facts = {
        "model": f"{victim['architecture']} — {victim.get('description', '')}; trained "
        f"{victim.get('epochs')} epoch(s)",
        "dataset": f"{victim['dataset']} ({victim.get('test_images')} test images)",
        "budget": f"{budget['name']} — {budget.get('description', '')}",
        "victim test accuracy": accuracy,
    }
    if len(m.get("victims") or []) > 1:
        each = ", ".join(f"seed {v['seed']}: {_num(v['test_accuracy'], 4)}" for v in m["victims"])
        facts["victims"] = f"{len(m['victims'])} ({each}); see Across victims"
    return (
        _dl({k: _esc(v) for k, v in facts.items()})
        + _banner(results)
        + f"<h3>Verdict per split point</h3>{_table(_COLUMNS['splits'], results['splits'])}"
        + _tag("p", _TEXT["rule"], "muted")
        + _tag("p", _reading(results))
    )


def _attacks(results: Row) -> str:
    rows = []
    for a in _main_attacks(results):
        paper = dict(zip(("paper_psnr", "paper_ssim"), a["published"] or [None, None], strict=True))
        converged = {True: "yes", False: "no"}.get(a["converged"], "n/a")
        extra = {"variant": _variant(a) or "— (knows the weights)", "converged_text": converged}
        if a.get("evaluator_accuracy") is not None:
            extra["evaluator_text"] = (
                f"{a['evaluator_accuracy']:.2f} ({a['evaluator_accuracy_original']:.2f})"
            )
        rows.append(a | paper | extra | {"queries_text": f"{a['queries']:,}"})
    if not rows:
        return _tag("p", "No attack cell has finished yet.")
    return _table(_COLUMNS["attacks"], rows) + _tag("p", _TEXT["attacks"], "muted")


def _grids(results: Row, store: _Preview, figures: Path) -> str:
    """One grid per attack: the inputs, then one row per split point (worst-case variant)."""
    depth, out = {c["split"]: c["depth"] for c in results["manifest"]["split_costs"]}, []
    stored = [a for a in _main_attacks(results) if store.tensors(a["key"])]
    for attack in dict.fromkeys(a["attack"] for a in stored):
        mine = [a for a in stored if a["attack"] == attack]
        many = len({_variant(a) for a in mine}) > 1
        worst = {a["split"]: a for a in sorted(mine, key=lambda a: a["ssim"])}  # the highest last
        ordered = sorted(worst.items(), key=lambda kv: depth.get(kv[0], 0))
        rows = [(s + (f" [{_variant(a)}]" if many else ""), a["key"]) for s, a in ordered]
        path = grid_from_cells(store, rows, figures / f"grid-attack-{attack}.png")
        caption = f"{attack}: the inputs, then one row per split point; PSNR (dB) under each image"
        out.append(_tag("h3", attack) + _figure(path, caption))
    return "".join(out) or _tag("p", "No stored reconstructions to show.")


def _split_sweep(results: Row, figures: Path) -> str:
    """The split-sweep chart; x is the rank among the attacked splits (the chart's ticks)."""
    depth = {s["split"]: i for i, s in enumerate(results["splits"])}
    rows, points = _main_attacks(results), []
    for a in rows:
        many = len({_variant(b) for b in rows if b["attack"] == a["attack"]}) > 1
        name = a["attack"] + (f" [{_variant(a)}]" if many else "")
        points.append({"attack": name, "split": a["split"], "depth": depth[a["split"]]})
        points[-1] |= {"psnr": a["psnr"], "ssim": a["ssim"]}
    if not points:
        return _tag("p", "No attack cell has finished yet.")
    path = split_sweep_figure(points, figures / "split-sweep")[0]
    return _figure(path, "PSNR and SSIM of each attack by split point (figures/split-sweep.svg)")


def _defense_table(points: list[Row]) -> str:
    """One row per attack, defense and level: accuracy, naive and aware leakage, the worse."""
    groups: dict[tuple[str, str, float], dict[bool, Row]] = {}
    for p in points:
        groups.setdefault((p["attack"], p["label"], p["level"]), {})[bool(p["adaptive"])] = p
    rows = []
    for (_, _, level), modes in sorted(groups.items()):
        naive, aware = modes.get(False), modes.get(True)
        if not level:
            worse = "— (no defense)"
        elif naive and aware:
            higher = (aware["ssim"], aware["psnr"]) > (naive["ssim"], naive["psnr"])
            worse = "aware" if higher else "naive"
        else:
            worse = f"{'aware' if aware else 'naive'} (the only mode run)"
        both = {"naive": naive or {}, "aware": aware or {}}
        leak = {f"{m}_{k}": both[m].get(k) for m in both for k in ("psnr", "ssim")}
        level_text = f"{level:g}" if level else "none"
        rows.append((naive or modes[True]) | leak | {"worse": worse, "level_text": level_text})
    return _table(_COLUMNS["defenses"], rows)


def _defenses(results: Row, store: _Preview, figures: Path) -> str:
    """Trade-off charts (naive, aware), the table of points, and one grid per family."""
    points = results["defenses"]
    if not points:
        return _tag("p", "This audit's budget runs no defense.")
    out: list[str] = [_tag("p", _TEXT["defenses"].format(split=points[0]["split"]))]
    charted = [p for p in points if p["accuracy"] is not None]
    attacks = sorted({p["attack"] for p in points})
    for attack, aware in ((attack, aware) for attack in attacks for aware in (False, True)):
        if any(p["level"] and p["attack"] == attack and p["adaptive"] == aware for p in charted):
            stem = figures / f"tradeoff-{attack}-{'aware' if aware else 'naive'}"
            path = tradeoff_figure(charted, stem, attack=attack, adaptive=aware)[0]
            out.append(_figure(path, f"accuracy against leakage (figures/{stem.name}.svg)"))
    out.append(_defense_table(points))
    ordered = sorted(points, key=itemgetter("attack", "level", "adaptive"))
    for label in sorted({p["label"] for p in points}):
        mine = [p for p in ordered if p["label"] == label and store.tensors(p["key"])]
        if not mine:  # reconstructions deleted: no grid
            continue
        names = [f"{p['attack']} " * (len(attacks) > 1) + f"{p['level']:g}" for p in mine]
        rows = [(n + " aware" * p["adaptive"], p["key"]) for n, p in zip(names, mine, strict=True)]
        path = grid_from_cells(store, rows, figures / f"grid-defense-{label.replace(' ', '-')}.png")
        caption = f"{label}: the inputs, then reconstructions by level (0: undefended)"
        out.append(_tag("h3", label) + _figure(path, caption))
    return "".join(out)


def _planner(results: Row, figures: Path) -> str:
    plan, names = results["plan"], {f.name for f in fields(SplitCost)}
    rows, front = [], []
    for r in plan["rows"]:
        cost = {k: r[k] for k in names} | {"feature_shape": tuple(r["feature_shape"])}
        rows.append(PlanRow(SplitCost(**cost), r["accuracy"], r["leakage"]))
        front += rows[-1:] if r["pareto"] else []
    if not rows:
        return _tag("p", f"No plan: {plan['reason']}.")
    table = format_table(rows, pareto=front)
    chosen = next((r for r in rows if r.split == plan["recommended"]), None)
    limits = ", ".join(f"{k}={v}" for k, v in sorted(plan["constraints"].items()) if v is not None)
    title = f"{results['manifest']['victim']['architecture']}: where to split"
    path = plot_plan(rows, figures / "plan", recommended=chosen, title=title)[0]
    highlight = rows.index(chosen) if chosen else -1
    return (
        f"<p><strong>Recommendation:</strong> {_esc(plan['recommended'] or 'none')} — "
        f"{_esc(plan['reason'])}</p>"
        + _tag("p", f"Constraints: {limits or 'none'}")
        + _table("|".join(f"{k}={k}" for k in table[0]), table, highlight)
        + _tag("p", _TEXT["pareto"], "muted")
        + _figure(path, "leakage against edge compute, and bytes per split (figures/plan.svg)")
    )


def _joint_planner(results: Row, figures: Path) -> str:
    """Split point and defense together: the recommendation, the front and every row."""
    from splitleak.joint_planner import plot_front

    plan = results["joint_plan"]
    if not plan["rows"]:
        return _tag("p", f"No joint plan: {plan['reason']}.")
    chosen = plan.get("recommended")
    rows = sorted(plan["rows"], key=lambda r: (not r["pareto"], -r["accuracy"], r["leakage"]))
    shown = [
        r
        | {
            "configuration": ", ".join(r["defenses"]) or "none",
            "front": "★" if r["pareto"] else "",
            "worst": "{attack}{aware}".format(
                attack=r["worst_attack"]["attack"], aware=" (aware)" * r["worst_attack"]["aware"]
            ),
            "feasible_text": "yes" if r["feasible"] else "no",
        }
        for r in rows
    ]
    highlight = next(
        (i for i, r in enumerate(rows)
         if chosen and r["split"] == chosen["split"] and r["defenses"] == chosen["defenses"]),
        -1,
    )  # fmt: skip
    columns = (
        "front=front|split=split|defense=configuration|accuracy=accuracy:4|"
        "worst-case SSIM=leakage:3|worst attack=worst|edge MACs=edge_macs|"
        "bytes sent=feature_bytes|meets the limits=feasible_text"
    )
    path = plot_front(plan, figures / "joint-front.png")
    deploy = "splitleak edge --from-plan DIR (DIR: this report's folder) deploys it."
    # A recommendation's reason starts with its configuration; "none" needs saying.
    reason = plan["reason"] if chosen else f"none — {plan['reason']}"
    return (
        f"<p><strong>Recommendation:</strong> {_esc(reason)}</p>"
        + (_tag("p", deploy, "muted") if chosen else "")
        + (_tag("p", _TEXT["no-limits"]) if not any(plan["constraints"].values()) else "")
        + _tag("p", _TEXT["joint"], "muted")
        + _table(columns, shown, highlight)
        + _figure(path, "accuracy against worst-case leakage (figures/joint-front.png)")
    )


def _across_victims(results: Row) -> str:
    """The leakage of each undefended attack and each split's worst case across victims."""
    found = results.get("across_victims")
    if not found:
        return _tag("p", _TEXT["one-victim"])

    def flat(row: Row) -> Row:
        each = {m: ", ".join(_num(v, d) for v in row[f"{m}_per_victim"].values())
                for m, d in (("ssim", 3), ("psnr", 2))}  # fmt: skip
        return row | {f"{m}_each": each[m] for m in each} | {
            "ssim": row["ssim"]["mean"], "ssim_ci95": row["ssim"]["ci95"],
            "psnr": row["psnr"]["mean"], "psnr_ci95": row["psnr"]["ci95"],
        }  # fmt: skip

    worst = [
        flat(w) | {"label": "worst case: " + ", ".join(dict.fromkeys(w["attacks"].values()))}
        for w in found["worst_case"]
    ]
    seeds = ", ".join(str(s) for s in found["seeds"])
    return _table(_COLUMNS["victims"], [flat(r) for r in found["table"]] + worst) + _tag(
        "p", _TEXT["victims"].format(n=len(found["seeds"]), seeds=seeds), "muted"
    )


def _warnings(results: Row) -> str:
    if not results["warnings"]:
        return _tag("p", "No check fired.", "ok")
    labels, rows = {c["key"]: c["label"] for c in results["manifest"]["cells"]}, []
    for w in results["warnings"]:
        names = [labels.get(k, k) for k in w["cells"]]
        more = f" … and {len(names) - 5} more" if len(names) > 5 else ""
        rows.append(w | {"cell_labels": "; ".join(names[:5]) + more})
    note = "docs/checks.md explains each check and what to do about it."
    return _table(_COLUMNS["warnings"], rows) + _tag("p", note, "muted")


def _configuration(results: Row) -> str:
    m = results["manifest"]
    items = {"format": _esc(m.get("format", "")), "created": _esc(m["created"])}
    for name in ("config", "budget", "victim", "versions"):
        items[name] = _tag("pre", json.dumps(m.get(name), indent=2, sort_keys=True, default=str))
    return _dl(items)


def render_report(directory: Path) -> Path:
    """Write ``results.json``, ``figures/`` and ``report.html`` into an audit folder (complete
    or not: missing cells are listed); returns the path of ``report.html``."""
    results = assemble(directory)
    results["warnings"] = check(results)
    write_json(directory / "results.json", json_safe(results))
    figures, store = directory / "figures", _Preview(directory)
    figures.mkdir(exist_ok=True)
    sections = {
        "summary": ("Summary", _summary(results)),
        "attacks": ("Attacks", _attacks(results)),
        "grids": ("Reconstructions", _grids(results, store, figures)),
        "split-sweep": ("Split sweep", _split_sweep(results, figures)),
        "victims": ("Across victims", _across_victims(results)),
        "defenses": ("Defenses", _defenses(results, store, figures)),
        "planner": ("Planner", _planner(results, figures)),
        "joint-plan": ("Split and defense", _joint_planner(results, figures)),
        "warnings": ("Warnings", _warnings(results)),
        "configuration": ("Configuration", _configuration(results)),
    }
    m = results["manifest"]
    title = _esc(f"splitleak audit — {m['victim']['architecture']} on {m['victim']['dataset']}")
    nav = "".join(f'<a href="#{sid}">{_esc(head)}</a>' for sid, (head, _) in sections.items())
    body = "".join(
        f'<section id="{sid}">\n<h2>{_esc(head)}</h2>\n{content}\n</section>\n'
        for sid, (head, content) in sections.items()
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<header><h1>{title}"
        '</h1><p class="muted">What can an untrusted cloud rebuild of the input from the '
        f"features it receives? Audit created {_esc(m['created'])}.</p><nav>{nav}</nav>"
        f"</header>\n{body}</body>\n</html>\n"
    )
    write_text(directory / "report.html", page)
    return directory / "report.html"

"""Print the markdown tables of BENCHMARKS.md from the results files (no numbers typed by hand).

cd benchmarks
python tables_md.py results/table3_mnist-net.json results/tables468_mnist-net.json
python tables_md.py --claims results/tables468_mnist-net.json results/table6_...json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(summary: dict, published: list | None) -> str:
    p, s = summary["psnr"], summary["ssim"]
    ci = lambda d, k: f" ± {d['ci95']:.{k}f}" if d.get("ci95") else ""  # noqa: E731
    text = f"{p['mean']:.2f}{ci(p, 2)} / {s['mean']:.3f}{ci(s, 3)}"
    if published:
        gap = p["mean"] - published[0]
        text += f" | {published[0]:.2f} / {published[1]:.3f} | {gap:+.2f} dB"
    else:
        text += " | — | —"
    return text


def merged_claims(paths: list[str]) -> list[str]:
    """Claims 2 and 3 over the union of several results files (later files win per cell)."""
    from threat_grid_tables import claims

    cells: dict[tuple, dict] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            if "summary" in r and "table" in r:
                cells[(r["table"], r["split"], r["row_key"], r["protocol"])] = r
    return claims(list(cells.values()))


def main() -> None:
    if sys.argv[1] == "--claims":
        print("\n".join(f"- {c}" for c in merged_claims(sys.argv[2:])))
        return
    for path in sys.argv[1:]:
        data = json.loads(Path(path).read_text())
        print(
            f"\n<!-- from {Path(path).name}: {data['date']}, wall {data['wall_s']} s, "
            f"torch {data['versions']['torch']}, {data['versions']['torch_threads']} threads -->"
        )
        rows = [r for r in data["rows"] if "summary" in r]
        print("| protocol | setting | split | measured PSNR / SSIM | paper | gap | time (s) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            setting = r.get("setting") or r.get("profile")
            table = f"T{r['table']} " if "table" in r else ""
            print(
                f"| {r['protocol']} | {table}{setting} | {r['split']} | "
                f"{fmt(r['summary'], r.get('published'))} | {r['seconds']} |"
            )
        for r in data["rows"]:
            if "claims" in r:
                print("\n" + "\n".join(f"- {c}" for c in r["claims"]))


if __name__ == "__main__":
    main()

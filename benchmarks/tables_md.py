"""Print the markdown tables of BENCHMARKS.md from the results files (no numbers typed by hand).

    python benchmarks/tables_md.py results/table3_mnist-net.json results/tables468_mnist-net.json
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


def main() -> None:
    for path in sys.argv[1:]:
        data = json.loads(Path(path).read_text())
        print(f"\n<!-- from {Path(path).name}: {data['date']}, wall {data['wall_s']} s, "
              f"torch {data['versions']['torch']}, {data['versions']['torch_threads']} threads -->")
        rows = [r for r in data["rows"] if "summary" in r]
        print("| protocol | setting | split | measured PSNR / SSIM | paper | gap | time (s) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            setting = r.get("setting") or r.get("profile")
            table = f"T{r['table']} " if "table" in r else ""
            print(f"| {r['protocol']} | {table}{setting} | {r['split']} | "
                  f"{fmt(r['summary'], r.get('published'))} | {r['seconds']} |")
        for r in data["rows"]:
            if "claims" in r:
                print("\n" + "\n".join(f"- {c}" for c in r["claims"]))


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: BSD-3-Clause
"""Draws bench/results/latest.csv (bench/run.sh) as a PNG: one horizontal
bar per benchmark, the ratio vdisk / reference (below 1: vdisk is faster),
with the benchmark's target as a mark and the line at 1.0 (parity).
Usage: /usr/bin/python3 bench/plot.py CSV PNG"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py CSV PNG")
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        title = f.readline().lstrip("# ").strip()
        rows = [r for r in csv.DictReader(f) if r["ratio"] not in ("", "-")]
    if not rows:
        sys.exit("%s: no ratios to plot" % src)
    rows.reverse()  # first benchmark on top
    names = [r["benchmark"] for r in rows]
    ratios = [float(r["ratio"]) for r in rows]
    colors = ["tab:green" if r["meets_target"] == "yes" else
              "tab:red" if r["meets_target"] == "no" else "tab:gray" for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(rows) + 1.6))
    ax.barh(range(len(rows)), ratios, color=colors)
    for i, r in enumerate(rows):
        if r["target"] not in ("", "-"):
            ax.plot([float(r["target"])] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(ratios[i], i, " %.2f" % ratios[i], va="center", fontsize=7)
    ax.axvline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("vdisk / reference (time or size; below 1 is better; black mark: target;"
                  " green: target met)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


main()

"""Plot quality against bytes per document from ``results/zeroshot.json`` (a hand-written SVG, no plotting library).

    python benchmarks/plot.py        # -> benchmarks/results/quality_vs_bytes.svg

x: bytes per document on a log scale (a k-entry code is 8k bytes: int32 index + float32 value per entry;
the dense MiniLM vector is 1,536 bytes); y: nDCG@10 as % of dense, mean over the sets none of whose text
the default head saw. Lines: the default head zero-shot, the head adapted at ingest, and the dense
vector cut to the same number of bytes.
"""

from __future__ import annotations

import json
import math

from _common import RESULTS

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 60, 170, 20, 50
SERIES = (("adapted", "adapted at ingest", "#1b7837"), ("default", "default head, zero-shot", "#2166ac"),
          ("dense_same_bytes", "dense cut to the same bytes", "#b2182b"))


def means(sets: dict, key: str) -> dict[int, float]:
    ks = sorted({int(k) for r in sets.values() for k in r[key]})
    value = (lambda r, k: r[key][str(k)]) if key == "dense_same_bytes" else (lambda r, k: r[key][str(k)]["ndcg@10"])
    return {k: 100 * sum(value(r, k) / r["dense"] for r in sets.values()) / len(sets) for k in ks}


def svg(res: dict) -> str:
    sets = {n: r for n, r in res["sets"].items() if not r["default_head_saw_corpus"]}
    x0, x1 = math.log2(12), math.log2(2048)

    def px(nbytes: float) -> float:
        return LEFT + (math.log2(nbytes) - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(pct: float) -> float:
        return TOP + (1 - pct / 110) * (H - TOP - BOTTOM)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>']
    for pct in range(0, 111, 20):
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(pct):.1f}" y2="{py(pct):.1f}" stroke="#ddd"/>'
                   f'<text x="{LEFT - 6}" y="{py(pct) + 4:.1f}" text-anchor="end">{pct}%</text>')
    for nbytes in (16, 32, 64, 128, 256, 512, 1536):
        out.append(f'<text x="{px(nbytes):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{nbytes}</text>')
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 12}" text-anchor="middle">bytes per document '
               '(k = 2, 4, 8, 16, 32 codes: 16..256)</text>')
    out.append(f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})" '
               'text-anchor="middle">nDCG@10, % of dense</text>')
    for i, (key, label, colour) in enumerate(SERIES):
        pts = [(px(8 * k), py(v)) for k, v in means(sets, key).items()]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                   + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        out.append(f'<text x="{W - RIGHT + 10}" y="{TOP + 20 + 18 * i}" fill="{colour}">{label}</text>')
    out.append(f'<circle cx="{px(1536):.1f}" cy="{py(100):.1f}" r="4" fill="black"/>'
               f'<text x="{px(1536) - 6:.1f}" y="{py(100) - 8:.1f}" text-anchor="end">dense 384-d</text>')
    out.append(f'<text x="{W - RIGHT + 10}" y="{TOP + 20 + 18 * len(SERIES)}">mean over {len(sets)} unseen '
               'sets</text></svg>')
    return "\n".join(out) + "\n"


def main() -> None:
    res = json.loads((RESULTS / "zeroshot.json").read_text())
    (RESULTS / "quality_vs_bytes.svg").write_text(svg(res))
    print(f"wrote {RESULTS / 'quality_vs_bytes.svg'}")


if __name__ == "__main__":
    main()

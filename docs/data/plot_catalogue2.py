"""Draw docs/img/catalogue2-targets-h200.png from one visit's bench JSON files (``kernels.bench.to_json``).

    python docs/data/plot_catalogue2.py docs/data/catalogue2-h200-2026-11-28 docs/img/catalogue2-targets-h200.png

Each bar is issue 5's measure for one target, as a fraction of the target: the best variant against its baseline
(SDPA, cuDNN, three cuBLAS calls, our own bf16 forward) or against the copy bandwidth of that run. For the
bandwidth targets a second mark shows the same row against a copy of its own bytes ('% copy@size').
The bf16 attention forward rows are in the visit's bench text, not a JSON file: they are given here by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _rows(folder: Path, name: str) -> list[dict]:
    return json.loads((folder / name).read_text())["rows"]


def _best(rows: list[dict], where=lambda row: True) -> dict:
    """The fastest variant row (not a peer) among those ``where`` keeps."""
    return min((r for r in rows if r["kind"] == "variant" and where(r)), key=lambda r: r["ms"])


def _peer(rows: list[dict], name: str, shape=None) -> dict:
    return next(r for r in rows if r["name"] == name and (shape is None or r["shape"] == shape))


def measures(folder: Path, attention_fwd_ms: dict[str, tuple[float, float]]) -> list[tuple[str, float, float | None]]:
    """(label, achieved / target, achieved at same-size copy / target or None)."""
    out = []
    for mask, (ours, sdpa) in attention_fwd_ms.items():
        out.append((f"attention fwd, {mask}: {sdpa / ours:.2f}× SDPA / 0.90", sdpa / ours / 0.90, None))
    step = _rows(folder, "attention-fwdbwd-default-bf16.json")
    fp8 = _rows(folder, "attention-fwd-default-e4m3.json")
    for tail, mask in ((1, "none"), (2, "causal")):
        best = _best(step, lambda r, tail=tail: r["shape"][-1] == tail)
        ratio = _peer(step, "SDPA", best["shape"])["ms"] / best["ms"]
        out.append((f"attention fwd+bwd, {mask}: {ratio:.2f}× / 0.80", ratio / 0.80, None))
    for tail, mask in ((1, "none"), (2, "causal")):
        ratio = attention_fwd_ms[mask][0] / _best(fp8, lambda r, tail=tail: r["shape"][-1] == tail)["ms"]
        out.append((f"fp8 attention, {mask}: {ratio:.2f}× bf16 / 1.3", ratio / 1.3, None))
    for op in ("quantize", "dequantize"):
        for path in sorted(folder.glob(f"{op}-fwd-*-bf16.json")):
            best = _best(_rows(folder, path.name))
            mode = path.name.split("-")[2]
            out.append((f"{op} {mode}: {best['pct_copy']:.0f} % / 95", best["pct_copy"] / 95,
                        best["pct_copy_at_size"] / 95))  # fmt: skip
    for r in [r for r in _rows(folder, "nf4_dequantize-fwd-default-bf16.json") if r["name"] == "fused"]:
        out.append((f"nf4 {r['shape'][0] / 1e6:.0f} M values: {r['pct_copy']:.0f} % / 95", r["pct_copy"] / 95,
                    r["pct_copy_at_size"] / 95))  # fmt: skip
    int8 = _rows(folder, "int8_matmul-fwd-default-bf16.json")
    for m in (1, 16):
        best = _best(int8, lambda r, m=m: r["shape"][0] == m)
        out.append((f"int8_matmul M={m}: {best['pct_copy']:.0f} % / 85", best["pct_copy"] / 85,
                    best["pct_copy_at_size"] / 85))  # fmt: skip
    conv = _rows(folder, "conv2d-fwd-default-bf16.json")
    for shape in sorted({tuple(r["shape"]) for r in conv}, key=lambda s: (-s[3], s[1])):
        ratio = (
            _peer(conv, "cuDNN", [*shape])["ms"] / _best(conv, lambda r, shape=shape: tuple(r["shape"]) == shape)["ms"]
        )
        _, c, h, _, k, fh = shape[:6]
        out.append((f"conv2d {c}×{h}²→{k} {fh}×{fh}: {ratio:.2f}× / 0.8", ratio / 0.8, None))
    lora = _rows(folder, "lora_linear-fwd-default-bf16.json")
    ratio = _peer(lora, "3x cuBLAS")["ms"] / _best(lora)["ms"]
    out.append((f"lora_linear: {ratio:.2f}× / 1.2", ratio / 1.2, None))
    return out


def draw(items, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.32 * len(items) + 1.4))
    y = range(len(items))
    ax.barh(list(y), [v for _, v, _ in items], color=["#3a7" if v >= 1 else "#c84" for _, v, _ in items])
    at_size = [(i, s) for i, (_, _, s) in enumerate(items) if s is not None]
    ax.scatter([s for _, s in at_size], [i for i, _ in at_size], marker="|", s=120, color="k",
               label="against a copy of the row's own bytes", zorder=3)  # fmt: skip
    ax.axvline(1.0, color="k", lw=1)
    ax.set_yticks(list(y), [label for label, _, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("measured / target (1 = target met)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    folder, png = Path(sys.argv[1]), Path(sys.argv[2])
    # bf16 forward, best variant (flash_hopper 1.1.0) and SDPA in ms, from bench-visit-1.txt of the same run.
    fwd = {"none": (2.1177, 1.8608), "causal": (1.1881, 0.9922)}
    items = measures(folder, fwd)
    draw(items, "Catalogue II against issue 5's targets: NVIDIA H200, torch 2.11.0+cu130, triton 3.6.0, 2026-11-28",
         png)  # fmt: skip
    for label, value, at_size in items:
        print(f"{value:5.2f}  {'' if at_size is None else f'{at_size:5.2f}'}  {label}")

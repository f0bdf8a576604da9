"""``evomp report``: pictures of a run's trade-off and one self-contained HTML summary.

Reads only the run directory (``front.csv``, ``front.json``, ``evaluations.csv``,
``surrogate_quality.csv``, ``space.json``, ``run.json``), so it works on any finished
search or baseline run without rebuilding the model. Writes into ``<run>/report/``:

``front_<metric>.png``
    accuracy against each hardware objective: every true evaluation faintly, dominated
    ones fainter still, verified front members highlighted (validation accuracy after the
    final QAT, filled; test accuracy, hollow) and labelled by id.
``hypervolume.png``
    hypervolume of the true evaluations (validation accuracy and every hardware
    objective, normalised) against the number of true evaluations.
``surrogate.png``
    predicted against measured accuracy of each round's candidates, with the round's
    Kendall tau (search runs only; baselines have no surrogate).
``bits.png``
    per-layer bit allocation of chosen front members: the share of channels at each
    weight bit level (pruned channels hatched) and the activation bits.
``report.html``
    the plots (embedded) and the front table; readable without evomp installed.
"""

from __future__ import annotations

import base64
import errno
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomp._errors import EvompError
from evomp.objectives import hypervolume_2d, nondominated
from evomp.reports._compare import metric_label
from hwmodels import LayerTable

__all__ = [
    "RunData",
    "Report",
    "load_run_data",
    "write_report",
    "hypervolume_trace",
    "pick_members",
]


@dataclass
class RunData:
    """What a report reads from a run directory.

    Attributes:
        path: the run directory.
        front: ``front.csv`` rows (numbers parsed), sorted by the first hardware objective.
        members: ``front.json`` (bit configuration of each front member by id).
        evaluations: ``evaluations.csv`` rows (numbers parsed).
        quality: ``surrogate_quality.csv`` rows (numbers parsed); empty for baselines.
        meta: ``run.json``.
        table: the layer table (``space.json``).
    """

    path: Path
    front: list[dict[str, Any]]
    members: dict[str, Any]
    evaluations: list[dict[str, Any]]
    quality: list[dict[str, Any]]
    meta: dict[str, Any]
    table: LayerTable
    hw_objectives: list[str] = field(default_factory=list)

    @property
    def short(self) -> list[dict[str, Any]]:
        """The search's true evaluations (short QAT), in the order they were made."""
        rows = [r for r in self.evaluations if r.get("fidelity") == "short"]
        return sorted(rows, key=lambda r: _trial_number(r.get("id")))


def _trial_number(gid: Any) -> float:
    s = str(gid or "")
    digits = "".join(ch for ch in s if ch.isdigit())
    return float(digits) if digits else math.inf


def load_run_data(run_dir: str | Path) -> RunData:
    """Read a finished run directory (through :class:`~evomp.run.RunDir`).

    Raises:
        EvompError: not a finished run directory (naming what is missing), or a damaged
            one (a truncated ``front.csv`` row, a ``front.json`` that is not valid JSON or
            lacks a member, an unreadable ``space.json`` or ``run.json``).
    """
    from evomp.run import RunDir

    rd = RunDir(run_dir)
    d = rd.path
    missing = [p.name for p in (rd.front_csv, rd.front_json, rd.space) if not p.is_file()]
    if missing:
        raise EvompError(f"{d} is not a finished run directory (missing {missing}); run "
                         "`evomp run` or `evomp baseline` into it first")
    front, members = rd.read_front()
    meta = rd.read_run_json()
    try:
        table = LayerTable.from_json(rd.space.read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvompError(f"{rd.space} is damaged ({type(e).__name__}: {e})") from e
    known = [k for k in (front[0] if front else {}) if k not in
             ("id", "val_accuracy", "test_accuracy", "ptq_accuracy", "genome_hash", "violation")]
    hw = [o for o in meta.get("objectives", []) if o != "accuracy" and o in known]
    if not hw:
        hw = [m for m in ("memory_bytes",) if m in known] or known[:1]
    key = hw[0] if hw else None
    if key:
        front.sort(key=lambda r: (r.get(key) is None, r.get(key) or 0.0))
    return RunData(d, front, members, rd.read_evaluations(), rd.read_quality(), meta, table,
                   hw)


# --------------------------------------------------------------------------- numbers
def hypervolume_trace(acc: np.ndarray, costs: np.ndarray, feasible: np.ndarray | None = None
                      ) -> tuple[np.ndarray, tuple[float, ...]]:
    """Hypervolume after each of ``n`` evaluations, as a share of the reference box.

    Objectives: ``1 - acc`` and each column of ``costs`` divided by its maximum over all
    ``n`` evaluations; the reference point is ``(1, 1.1, ..., 1.1)`` (accuracy 0 and 10%
    beyond the largest cost), the ideal corner ``(0, 0, ...)``.

    Args:
        acc: ``(n,)`` accuracies in evaluation order (NaN for failed evaluations).
        costs: ``(n, m)`` hardware metrics (minimised).
        feasible: ``(n,)`` bool; infeasible evaluations add nothing.

    Returns:
        ``((n,) hypervolume fractions, reference point in the normalised space)``.
    """
    acc = np.asarray(acc, float)
    C = np.asarray(costs, float).reshape(len(acc), -1)
    scale = np.nanmax(np.where(np.isfinite(C), C, np.nan), axis=0) if len(C) else np.ones(0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    F = np.concatenate([1.0 - acc[:, None], C / scale[None, :]], axis=1)
    ok = np.isfinite(F).all(axis=1)
    if feasible is not None:
        ok &= np.asarray(feasible, bool)
    ref = (1.0,) + (1.1,) * C.shape[1]
    box = float(np.prod(ref))
    out = np.zeros(len(acc))
    if F.shape[1] == 2:
        hv_of = lambda P: hypervolume_2d(P, ref)  # noqa: E731
    else:
        from pymoo.indicators.hv import HV

        ind = HV(ref_point=np.array(ref))
        hv_of = lambda P: float(ind(P)) if len(P) else 0.0  # noqa: E731
    last = 0.0
    for k in range(len(acc)):
        if ok[k]:
            P = F[: k + 1][ok[: k + 1]]
            P = P[nondominated(P)]
            last = hv_of(P) / box
        out[k] = last
    return out, ref


def pick_members(data: RunData, pick: Sequence[str] | None = None, most: int = 4) -> list[str]:
    """Front member ids to draw: ``pick`` (checked), or up to ``most`` spread evenly over
    the first hardware objective (smallest and largest included)."""
    ids = [str(r["id"]) for r in data.front]
    if pick:
        unknown = [p for p in pick if p not in data.members]
        if unknown:
            raise EvompError(f"front members {unknown} are not in {data.path}; its front has "
                             f"{ids}")
        return list(pick)
    if len(ids) <= most:
        return ids
    idx = np.unique(np.rint(np.linspace(0, len(ids) - 1, most)).astype(int))
    return [ids[i] for i in idx]


# ---------------------------------------------------------------------------- plots
def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _place_labels(ax, xy: list[tuple[float, float]], texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Annotate points, trying offsets until a label overlaps no earlier label or point."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts_disp = ax.transData.transform(np.asarray(xy, float)) if xy else np.zeros((0, 2))
    placed: list[Any] = []
    offsets = [(6, 6), (6, -12), (-18, 6), (-18, -12), (8, 16), (8, -22), (-26, 16),
               (-26, -22), (14, 0), (-30, 0), (0, 24), (0, -30)]
    for (x, y), text in zip(xy, texts):
        best = None
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              fontsize=8, fontweight="bold", color="#222")
            bb = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            hits_label = any(bb.overlaps(o) for o in placed)
            hits_point = any(bb.contains(px, py) for px, py in pts_disp)
            if not hits_label and not hits_point:
                best = (ann, bb)
                break
            ann.remove()
        if best is None:  # crowded: take the first offset and draw a leader line
            ann = ax.annotate(text, (x, y), xytext=offsets[0], textcoords="offset points",
                              fontsize=8, fontweight="bold", color="#222",
                              arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#666"})
            best = (ann, ann.get_window_extent(renderer))
        placed.append(best[1])


def _log_if_wide(ax, xs: np.ndarray, axis: str = "x") -> None:  # type: ignore[no-untyped-def]
    xs = np.asarray(xs, float)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if len(xs) and xs.max() / xs.min() > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def plot_front(data: RunData, metric: str, path: Path) -> Path:
    """Accuracy against ``metric``: evaluations faint, verified front members labelled."""
    plt = _plt()
    xl, xs = metric_label(metric)
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    ev = [r for r in data.short if isinstance(r.get(metric), float)
          and isinstance(r.get("val_accuracy"), float) and not r.get("failed")]
    E = np.array([[r[metric] * xs, r["val_accuracy"] * 100] for r in ev], float).reshape(-1, 2)
    fr = [r for r in data.front if isinstance(r.get(metric), float)]
    X = np.array([r[metric] for r in fr], float) * xs
    V = np.array([np.nan if r.get("val_accuracy") is None else r["val_accuracy"]
                  for r in fr], float) * 100
    T = np.array([np.nan if r.get("test_accuracy") is None else r["test_accuracy"]
                  for r in fr], float) * 100
    bottom = _accuracy_floor(np.concatenate([V, T]), E[:, 1])
    shown = E[:, 1] >= bottom
    hidden = int((~shown).sum())
    if len(E):
        nd = nondominated(np.stack([E[:, 0], -E[:, 1]], axis=1))
        for mask, kw, what in ((~nd, {"s": 14, "color": "#9aa5b1", "alpha": 0.35}, "dominated"),
                               (nd, {"s": 18, "color": "#52606d", "alpha": 0.6},
                                "non-dominated")):
            m = mask & shown
            ax.scatter(E[m, 0], E[m, 1], linewidths=0, **kw,
                       label=f"true evaluations (short QAT), {what} here ({int(mask.sum())})")
    if len(fr):
        order = np.argsort(X, kind="stable")
        ax.step(X[order], np.fmax.accumulate(V[order]), where="post", color="#c0392b",
                lw=1.0, alpha=0.5)
        ax.scatter(X, V, s=60, color="#c0392b", zorder=4, edgecolors="white", linewidths=0.8,
                   label="verified front: validation (final QAT)")
        if np.isfinite(T).any():
            ax.scatter(X, T, s=60, facecolors="none", edgecolors="#1f618d", linewidths=1.4,
                       zorder=4, label="verified front: test")
    else:
        ax.text(0.5, 0.5, f"no front member has {metric}", transform=ax.transAxes,
                ha="center")
    vis_x = np.concatenate([X, E[shown, 0]])
    if len(vis_x):
        _log_if_wide(ax, vis_x)
        lo, hi = float(vis_x.min()), float(vis_x.max())
        if ax.get_xscale() == "log" and lo > 0:
            ax.set_xlim(lo / 1.25, hi * 1.25)
        else:
            pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
            ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(bottom, 100.5)
    if hidden:
        ax.text(0.01, 0.01, f"{hidden} evaluation(s) below {bottom:.0f}% not shown",
                transform=ax.transAxes, fontsize=8, color="#52606d")
    if len(fr):
        _place_labels(ax, list(zip(X.tolist(), np.nan_to_num(V, nan=bottom).tolist())),
                      [str(r["id"]) for r in fr])
    ax.set_xlabel(xl)
    ax.set_ylabel("accuracy [%]")
    ax.grid(True, alpha=0.3)
    method = data.meta.get("method", "run")
    ax.set_title(f"{data.path.name} ({method}): accuracy against {metric}", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _accuracy_floor(front_acc: np.ndarray, eval_acc: np.ndarray) -> float:
    """Bottom of the accuracy axis [%]: the front fills the plot; evaluations far below the
    front are counted in a note instead of squashing the front into a sliver."""
    f = np.asarray(front_acc, float)
    f = f[np.isfinite(f)]
    e = np.asarray(eval_acc, float)
    lo_front = float(f.min()) if len(f) else (float(e.min()) if len(e) else 0.0)
    floor = lo_front - max(15.0, 0.5 * (100.0 - lo_front))
    lo = min([lo_front, *[float(v) for v in e if v >= floor]])
    return max(0.0, lo - 0.06 * (100.0 - lo) - 1.0)


def plot_hypervolume(data: RunData, path: Path) -> Path | None:
    """Hypervolume of the true evaluations against their number (None if there are none)."""
    ev = data.short
    hw = [m for m in data.hw_objectives if ev and m in ev[0]]
    if not ev or not hw:
        return None
    acc = np.array([np.nan if (r.get("failed") or r.get("val_accuracy") is None)
                    else r["val_accuracy"] for r in ev], float)
    C = np.array([[np.nan if r.get(m) is None else r[m] for m in hw] for r in ev], float)
    hv, ref = hypervolume_trace(acc, C, _feasible(data, acc, ev))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    n = np.arange(1, len(hv) + 1)
    ax.plot(n, 100 * hv, color="#c0392b", lw=1.6, marker="o", ms=3)
    rounds = [r.get("round") for r in ev]
    starts = [k for k in range(1, len(rounds))
              if rounds[k] != rounds[k - 1] and rounds[k] is not None]
    for j, k in enumerate(starts):
        ax.axvline(k + 0.5, color="grey", ls=":", lw=0.8,
                   label="start of a round" if j == 0 else None)
    if starts:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("true evaluations (short QAT) [count]")
    ax.set_ylabel("hypervolume [% of reference box]")
    objs = ", ".join(["1 - val accuracy"] + [f"{m}/max" for m in hw])
    ax.set_title(f"hypervolume of ({objs}); reference point {ref}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _feasible(data: RunData, acc: np.ndarray, ev: list[dict[str, Any]]) -> np.ndarray:
    from evomp.objectives import parse_constraint

    ok = np.ones(len(ev), bool)
    for text in data.meta.get("constraints", []) or []:
        c = parse_constraint(text)
        v = acc if c.metric == "accuracy" else np.array(
            [np.nan if r.get(c.metric) is None else r[c.metric] for r in ev], float)
        ok &= np.nan_to_num(c.violation(v), nan=1.0) == 0
    return ok


def plot_surrogate(data: RunData, path: Path) -> Path | None:
    """Predicted against measured accuracy per round (None if no round recorded a prediction)."""
    ev = [r for r in data.short if isinstance(r.get("predicted_accuracy"), float)
          and isinstance(r.get("val_accuracy"), float)]
    if not ev:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    taus = {int(q["round"]): q.get("kendall_tau") for q in data.quality
            if isinstance(q.get("round"), float)}
    rounds = sorted({int(r["round"]) for r in ev if r.get("round") is not None})
    cmap = plt.get_cmap("viridis")
    allv = []
    for j, rd in enumerate(rounds):
        rows = [r for r in ev if r.get("round") == rd]
        p = np.array([r["predicted_accuracy"] for r in rows]) * 100
        m = np.array([r["val_accuracy"] for r in rows]) * 100
        s = np.array([r.get("predicted_std") or 0.0 for r in rows]) * 100
        allv += [*p, *m]
        tau = taus.get(rd)
        lab = f"round {rd}" + (f": tau {tau:.2f}" if isinstance(tau, float)
                               and math.isfinite(tau) else "")
        ax.errorbar(p, m, xerr=s, fmt="o", ms=5, lw=0.8, capsize=2,
                    color=cmap(j / max(1, len(rounds) - 1)), label=lab)
    lo, hi = min(allv), max(allv)
    pad = 0.05 * (hi - lo + 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", ls="--", lw=0.8,
            label="predicted = measured")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("surrogate-predicted validation accuracy [%] (bars: ±1 std)")
    ax.set_ylabel("measured validation accuracy, short QAT [%]")
    ax.set_title("surrogate before each round against the true evaluations it chose "
                 "(out of sample)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_BIT_COLORS = {0: "#d5d8dc", 1: "#7b241c", 2: "#e74c3c", 3: "#e67e22", 4: "#f5b041",
               5: "#abebc6", 6: "#58d68d", 7: "#2e86c1", 8: "#1f618d"}


def plot_bits(data: RunData, ids: Sequence[str], path: Path) -> Path:
    """Per-layer share of channels at each weight bit level, for front members ``ids``."""
    plt = _plt()
    t = data.table
    names = [lay.name for lay in t.layers]
    levels = sorted({int(b) for i in ids for n in names
                     for b in data.members[i]["bits"]["weights"][n]})
    n = len(ids)
    fig, axes = plt.subplots(1, n, figsize=(max(6.4, min(4.2 * n, 17)), 0.42 * len(names) + 2.4),
                             dpi=120, sharey=True, squeeze=False)
    rows = {str(r["id"]): r for r in data.front}
    key = data.hw_objectives[0] if data.hw_objectives else None
    for ax, gid in zip(axes[0], ids):
        bits = data.members[gid]["bits"]
        y = np.arange(len(names))
        left = np.zeros(len(names))
        for b in levels:
            share = np.array([np.mean(np.asarray(bits["weights"][nm]) == b) for nm in names])
            ax.barh(y, share * 100, left=left, color=_BIT_COLORS.get(b, "#888"),
                    hatch="///" if b == 0 else None, edgecolor="#555" if b == 0 else "white",
                    lw=0.4, label="pruned (0 bit)" if b == 0 else f"{b} bit")
            left += share * 100
        for yi, nm in zip(y, names):
            ax.text(101, yi, f"a{bits['activations'][nm]}", va="center", fontsize=7)
        r = rows.get(gid, {})
        sub = [gid]
        if isinstance(r.get("test_accuracy"), float):
            sub.append(f"test {100 * r['test_accuracy']:.1f}%")
        if key and isinstance(r.get(key), float):
            lab, sc = metric_label(key)
            sub.append(f"{r[key] * sc:.4g} {lab.split('[')[-1].rstrip(']')}")
        ax.set_title(", ".join(sub), fontsize=9)
        ax.set_xlim(0, 112)
        ax.set_xlabel("weight channels [% of layer]")
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # first layer on top (the axes share y: invert once)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(levels), fontsize=8,
               frameon=False)
    fig.suptitle("weight bits per layer (aN on the right: input activation bits)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- html
def _fmt_cell(k: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if k.endswith("accuracy"):
            return f"{100 * v:.2f}%"
        return f"{v:.5g}"
    return html.escape(str(v))


def _table_html(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt_cell(c, r.get(c))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;
font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f4f5}td:first-child,th:first-child{text-align:left}img{max-width:100%}
figure{margin:1.5em 0}figcaption{color:#555;font-size:0.85em}code{background:#f2f4f5;
padding:1px 4px}"""


def _html(data: RunData, plots: list[tuple[Path, str]], notes: list[str]) -> str:
    m = data.meta
    title = f"evomp report: {data.path.name}"
    summary = [
        ("method", m.get("method")), ("objectives", ", ".join(m.get("objectives", []))),
        ("constraints", ", ".join(m.get("constraints", [])) or "none"),
        ("hardware models", ", ".join(m.get("hardware", []))),
        ("true evaluations", m.get("n_true_evaluations")),
        ("final evaluations", m.get("n_final_evaluations")),
        ("front members", len(data.front)),
        ("status", m.get("status")),
        ("CPU seconds", None if m.get("cpu_seconds") is None else f"{m['cpu_seconds']:.0f}"),
        ("wall seconds", None if m.get("wall_seconds") is None else f"{m['wall_seconds']:.0f}"),
        ("final QAT steps", m.get("final_steps")), ("seed", m.get("seed")),
        ("layers / genes", f"{len(data.table.layers)} / {data.table.n_genes}"),
    ]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary if v not in (None, "")) + "</table>")
    parts.append("<h2>Verified front</h2><p>Accuracy after the final QAT; the front is the "
                 "measured one, not the predicted one.</p>")
    cols = [c for c in (data.front[0] if data.front else {}) if c != "genome_hash"]
    parts.append(_table_html(data.front, cols))
    if data.quality:
        parts.append("<h2>Surrogate quality per round (out of sample)</h2>")
        qcols = [c for c in ("round", "n_train", "n_new", "kendall_tau", "spearman", "mae",
                             "model") if c in data.quality[0]]
        parts.append(_table_html(data.quality, qcols))
    parts.append("<h2>Plots</h2>")
    parts += [_img_html(p, alt) for p, alt in plots]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append(f"<p>Export a member: <code>evomp export {html.escape(str(data.path))} "
                 "--pick ID --out DIR</code>.</p></body></html>")
    return "\n".join(parts)


@dataclass
class Report:
    """Files written by :func:`write_report`."""

    out: Path
    html: Path
    plots: list[Path]
    notes: list[str]


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 pick: Sequence[str] | None = None, metrics: Sequence[str] | None = None
                 ) -> Report:
    """Write the plots and ``report.html`` of a finished run directory.

    Args:
        run_dir: a run directory (search or baseline).
        out: where to write (default ``<run_dir>/report``).
        pick: front member ids for the bit-allocation picture (default: up to 4, spread
            over the first hardware objective).
        metrics: hardware metrics to draw the front against (default: the run's hardware
            objectives); ``["all"]`` for every metric in ``front.csv``.

    Raises:
        EvompError: not a finished run directory, unknown member ids or metrics.
    """
    from evomp.run import RunDir, atomic_write_text, write_error

    data = load_run_data(run_dir)
    dest = Path(out) if out else RunDir(data.path).report
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / f".evomp-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise EvompError(f"cannot write the report into {dest}: {e.strerror}; pass --out "
                             "to write it elsewhere (nothing was changed)") from e
        raise write_error(dest, e) from e
    have = [k for k in (data.front[0] if data.front else {}) if k not in
            ("id", "val_accuracy", "test_accuracy", "ptq_accuracy", "genome_hash", "violation")]
    if metrics and list(metrics) == ["all"]:
        metrics = have
    metrics = list(metrics or data.hw_objectives)
    unknown = [m for m in metrics if m not in have]
    if unknown:
        raise EvompError(f"front.csv of {data.path} has no {unknown}; it has {have}")
    ids = pick_members(data, pick)
    plots: list[tuple[Path, str]] = []
    notes: list[str] = []
    for m in metrics:
        p = plot_front(data, m, dest / f"front_{m}.png")
        plots.append((p, f"accuracy against {m}"))
    hv = plot_hypervolume(data, dest / "hypervolume.png")
    if hv:
        plots.append((hv, "hypervolume against true evaluations"))
    else:
        notes.append("no short-QAT evaluations recorded: no hypervolume trace")
    sg = plot_surrogate(data, dest / "surrogate.png")
    if sg:
        plots.append((sg, "surrogate-predicted against measured accuracy, per round"))
    else:
        notes.append("no surrogate predictions recorded (a baseline, or a run without "
                     "rounds): no predicted-against-measured plot")
    if ids:
        plots.append((plot_bits(data, ids, dest / "bits.png"),
                      f"bit allocation of {', '.join(ids)}"))
    page = dest / "report.html"
    atomic_write_text(page, _html(data, plots, notes))
    return Report(dest, page, [p for p, _ in plots], notes)

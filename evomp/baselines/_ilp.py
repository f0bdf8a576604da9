"""HAWQ-V3-style bit allocation by an exact integer linear program, at channel or layer granularity.

Minimise the summed second-order sensitivity term (``surrogates.channel_terms``: per
channel and weight bits ``0.5 * w_sens[c] / w_numel[c] * w_err[c, b]``; per layer and
activation bits ``0.5 * a_sens[l] * a_numel[l] * a_noise[l, b]``) subject to a budget on
one hardware metric, with :func:`scipy.optimize.milp` (HiGHS, exact up to a 1e-9 relative
gap). A sweep of budgets between the cheapest and the dearest configuration gives a front.
A solve cut short by ``time_limit_s`` (scipy status 1) keeps its best configuration, but
that is not proven optimal: it is logged as a warning and marked in the sweep
(``proven_optimal``) and in the run's info (``all_proven_optimal``).

What the program models, per budget metric (:func:`budget_cost` derives the coefficients
from the hardware model itself and checks them against it on random configurations):

* metrics that add up over layers and, for a fixed input-activation width, over
  channels (``weight_bytes``, ``bitops``, ``mpic_cycles``, ``energy_uj``, a linear table
  model): a binary per (weight gene, weight choice) when the cost does not depend on the
  activation width, else per (weight gene, weight choice, activation choice) tied to the
  layer's activation choice (the exact product formulation of ``w x a`` terms: no
  linearisation error);
* ``memory_bytes``: packed weights as above, plus the peak activation buffer of
  :class:`hwmodels.MemoryModel` written exactly with a continuous peak variable
  (``peak >= buffer of every layer``) and, for the output buffer whose size depends on
  how many channels are kept *and* on the next layer's activation width, a continuous
  product variable per (gene, next activation choice);
* anything else (e.g. ``latency_cycles`` of the PULP model, with its ``max`` of compute
  and transfer and its per-group launch cost) is refused with an error naming the linear
  metrics; refine an ILP front for latency with the ``freebits`` method instead.

Every searched layer keeps at least one weight channel (as the search's repair does).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from evomp._errors import EvompError
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method
from hwmodels import HardwareModel, LayerTable, MemoryModel

if TYPE_CHECKING:
    from evomp.objectives import Objectives
    from evomp.run import RunContext

__all__ = [
    "BudgetCost",
    "IlpSolution",
    "budget_cost",
    "sensitivity_terms",
    "solve_ilp",
    "ilp_sweep",
    "sweep_budgets",
    "DEFAULTS",
]

log = logging.getLogger("evomp")

#: ``[baselines.ilp]`` keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "metric": "",  # budget metric; default: the run's first hardware objective
    "granularity": "auto",  # "auto" (the space's), "channel" or "layer"
    "points": 8,  # budgets in the sweep (--points overrides)
    "min_fraction": 0.04,  # smallest budget, as a fraction of the way from cheapest to dearest
    "spacing": "geometric",  # "geometric" (dense near the cheap end) or "linear"
    "time_limit_s": 60.0,  # per MILP solve; a solve cut short keeps its best solution,
                           # marked as not proven optimal
    "keep_channel": True,  # every searched layer keeps at least one weight channel
}


# ------------------------------------------------------------------------- costs
@dataclass(frozen=True)
class BudgetCost:
    """A hardware metric in the form the ILP uses (see the module docstring).

    Attributes:
        metric: the metric name, e.g. ``"memory_bytes"``.
        a_levels: ``(A,)`` activation widths the coefficients are indexed by (the
            activation choices plus pinned widths).
        w_coef: ``(n_layers, len(w_choices), A)`` cost of one free channel of layer ``l``
            at weight choice ``k`` when the layer's input is at ``a_levels[j]``.
        a_coef: ``(n_layers, A)`` per-layer cost at each input width that does not depend
            on the free channels (fixed part, pinned weights).
        separable: True when ``w_coef`` does not depend on the activation width.
        peak_in: ``(n_layers, A)`` memory only: input-buffer bytes of each layer at each
            input width, or None for metrics without an activation peak.
        peak_out: ``(n_layers,)`` bytes per kept output channel and output bit.
        last_bits: bits of the last layer's stored output.
    """

    metric: str
    a_levels: np.ndarray
    w_coef: np.ndarray
    a_coef: np.ndarray
    separable: bool
    peak_in: np.ndarray | None = None
    peak_out: np.ndarray | None = None
    last_bits: float = 0.0

    def evaluate(self, table: LayerTable, genomes: np.ndarray) -> np.ndarray:
        """``(n,)`` metric of a genome batch as the ILP computes it (equals the model's).

        Args:
            table: the layer table (granularity may differ from the one it was built on).
            genomes: ``(n, n_genes)`` int.
        """
        w, a = table.decode(genomes)
        j = np.searchsorted(self.a_levels, a)  # (n, L)
        cl = table.channel_layer
        free = table.w_gene_of_channel >= 0
        k = np.searchsorted(np.asarray(table.w_choices), w[:, free])  # (n, Cf)
        lay = cl[free][None, :]
        tot = self.w_coef[lay, k, j[:, cl[free]]].sum(axis=1)
        tot = tot + self.a_coef[np.arange(table.n_layers)[None, :], j].sum(axis=1)
        if self.peak_in is not None:
            assert self.peak_out is not None
            kept = np.zeros((w.shape[0], table.n_layers))
            np.add.at(kept.T, cl, (w > 0).T.astype(float))
            nxt = np.concatenate([a[:, 1:], np.full((a.shape[0], 1), self.last_bits)], axis=1)
            buf = self.peak_in[np.arange(table.n_layers)[None, :], j] + \
                self.peak_out[None, :] * kept * nxt
            tot = tot + buf.max(axis=1)
        return tot


def _a_levels(table: LayerTable) -> np.ndarray:
    pins = {lay.a_pinned for lay in table.layers if lay.a_pinned is not None}
    return np.array(sorted(set(table.a_choices) | pins), dtype=np.int64)


def budget_cost(table: LayerTable, model: HardwareModel, metric: str, *, check: int = 64,
                seed: int = 0) -> BudgetCost:
    """Derive the ILP coefficients of ``metric`` from ``model`` and check them.

    Per-layer costs are probed on uniform configurations (every channel at ``w``, every
    input at ``a``), all in one vectorized call of the model's per-layer costs
    (:meth:`hwmodels.HardwareModel.layer_cost_bits`); a free channel's
    coefficient is the layer's cost increase over the all-pruned layer, per channel.
    The result is then compared with ``model.cost`` on ``check`` random configurations.

    Args:
        table: the layer table.
        model: a hardware model providing ``metric``.
        metric: the budget metric.
        check: random configurations to check the coefficients on.
        seed: seed of those configurations.

    Raises:
        EvompError: the metric does not add up over layers and channels (e.g. a latency
            with a ``max`` or a per-group cost), naming the metrics that do.
    """
    if metric not in model.metrics:
        raise EvompError(f"hardware model {model.name!r} has no metric {metric!r}; it has "
                         f"{sorted(model.metrics)}")
    is_memory = isinstance(model, MemoryModel) and metric == "memory_bytes"
    probe_metric = "weight_bytes" if is_memory else metric
    a_lev = _a_levels(table)
    w_ch = list(table.w_choices)
    pins = sorted({lay.w_pinned for lay in table.layers if lay.w_pinned is not None})
    w_lev = sorted(set(w_ch) | set(pins) | {0})
    pairs = [(w, a) for w in w_lev for a in a_lev.tolist()]
    wb = np.array([[w] * table.n_channels for w, _ in pairs], dtype=np.int64)
    ab = np.array([[a] * table.n_layers for _, a in pairs], dtype=np.int64)
    try:
        per = model.layer_cost_bits(table, wb, ab)
    except ValueError as e:
        raise EvompError(f"cannot probe {metric!r} of model {model.name!r}: {e}") from e
    if probe_metric not in per:
        raise EvompError(_not_linear(metric, model, "it has no additive per-layer breakdown"))
    f = per[probe_metric]  # (P, L)
    f = f.reshape(len(w_lev), len(a_lev), table.n_layers).transpose(2, 0, 1)  # (L, W, A)
    out_ch = np.array([max(lay.out_channels, 1) for lay in table.layers], dtype=np.float64)
    zero = w_lev.index(0)
    sel = [w_lev.index(w) for w in w_ch]
    w_coef = (f[:, sel, :] - f[:, zero : zero + 1, :]) / out_ch[:, None, None]
    a_coef = f[:, zero, :].copy()
    for i, lay in enumerate(table.layers):
        if lay.w_pinned is not None:
            a_coef[i] = f[i, w_lev.index(lay.w_pinned), :]
            w_coef[i] = 0.0
    scale = max(float(np.abs(f).max()), 1e-300)
    separable = bool(np.all(np.abs(w_coef - w_coef[:, :, :1]) <= 1e-12 * scale))
    peak_in = peak_out = None
    last = 0.0
    if is_memory:
        assert isinstance(model, MemoryModel)
        in_numel = np.array([lay.in_numel for lay in table.layers], dtype=np.float64)
        out_numel = np.array([lay.out_numel for lay in table.layers], dtype=np.float64)
        peak_in = in_numel[:, None] * a_lev[None, :] / 8.0
        peak_out = out_numel / out_ch / 8.0
        last = float(model.last_output_bits)
    cost = BudgetCost(metric, a_lev, w_coef, a_coef, separable, peak_in, peak_out, last)
    if check:
        _check_cost(table, model, cost, check, seed)
    return cost


def _not_linear(metric: str, model: HardwareModel, why: str) -> str:
    return (
        f"the ILP needs a budget metric that adds up over layers and channels; {metric!r} "
        f"of model {model.name!r} does not ({why}). Use memory_bytes, weight_bytes, bitops, "
        "mpic_cycles or energy_uj ([baselines.ilp] metric = ...), and refine the front for "
        "latency with `evomp baseline SPEC --method freebits --from DIR`"
    )


def _check_cost(table: LayerTable, model: HardwareModel, cost: BudgetCost, n: int,
                seed: int) -> None:
    from evomp.baselines._random import sample_genomes

    g = sample_genomes(table, n, np.random.default_rng(seed))
    g = np.concatenate([g, np.zeros((1, table.n_genes), np.int8),
                        (table.gene_n_levels - 1)[None, :].astype(np.int8)])
    want = model.cost(table, g)[cost.metric]
    got = cost.evaluate(table, g)
    tol = 1e-9 * max(float(np.abs(want).max()), 1e-300)
    if np.any(np.abs(got - want) > tol):
        i = int(np.argmax(np.abs(got - want)))
        raise EvompError(_not_linear(
            cost.metric, model,
            f"on a random configuration the additive form gives {got[i]:.6g}, the model "
            f"{want[i]:.6g}"))


# ------------------------------------------------------------------- sensitivity
def sensitivity_terms(table: LayerTable, profile: Any) -> tuple[np.ndarray, np.ndarray]:
    """The ILP's objective terms from a sensitivity profile.

    Args:
        table: the layer table (its choices must be covered by the profile).
        profile: a :class:`surrogates.SensitivityProfile` of the same layers.

    Returns:
        ``w_term (n_channels, len(w_choices))`` and ``a_term (n_layers, len(a_choices))``:
        second-order loss increases (HAWQ's ``Tr(H)/n * ||Q(W) - W||^2``, per channel).
    """
    import surrogates
    from evomp.run import RunDir

    try:
        w_term = surrogates.channel_terms(table, profile)
    except ValueError as e:
        raise EvompError(str(e)) from e
    pa = tuple(profile.a_choices)
    missing = [b for b in table.a_choices if b not in pa]
    if missing:
        raise EvompError(f"the sensitivity profile has no activation noise for {missing} bits; "
                         f"delete the run directory's {RunDir('.').sensitivity.name} to "
                         "recompute it")
    cols = [pa.index(b) for b in table.a_choices]
    a_term = (0.5 * np.asarray(profile.a_sens) * np.asarray(profile.a_numel))[:, None] * \
        np.asarray(profile.a_noise)[:, cols]
    return np.asarray(w_term, dtype=np.float64), np.asarray(a_term, dtype=np.float64)


# ------------------------------------------------------------------------- solver
#: scipy ``milp`` statuses used here.
OPTIMAL, LIMIT, INFEASIBLE = 0, 1, 2


@dataclass(frozen=True)
class IlpSolution:
    """One solved budget.

    Attributes:
        genome: ``(n_genes,)`` int8 optimal genome, or None if the budget is infeasible.
        budget: the budget.
        cost: the metric of ``genome``.
        objective: summed sensitivity term of ``genome``.
        status: scipy's ``milp`` status (0 optimal, 1 limit reached, 2 infeasible).
        seconds: solve time.
    """

    genome: np.ndarray | None
    budget: float
    cost: float
    objective: float
    status: int
    seconds: float

    @property
    def proven_optimal(self) -> bool:
        """True when the solver proved ``genome`` optimal (status 0); a solve cut short
        by the time limit (status 1) may hold a feasible but suboptimal genome."""
        return self.genome is not None and self.status == 0

    @property
    def cut_short(self) -> bool:
        """True when the solve hit its time (or iteration) limit."""
        return self.status == 1


class _Program:
    """The MILP over one table and cost, built once and solved for many budgets."""

    def __init__(self, table: LayerTable, w_term: np.ndarray, a_term: np.ndarray,
                 cost: BudgetCost, keep_channel: bool = True) -> None:
        t = table
        self.table, self.cost = t, cost
        n_l, kw = t.n_layers, len(t.w_choices)
        lev = cost.a_levels
        na = len(lev)
        wg = t.w_gene_of_channel
        free = wg >= 0
        n_g = t.n_w_genes
        gl = np.zeros(n_g, dtype=np.int64)
        gl[wg[free]] = t.channel_layer[free]
        nch = np.bincount(wg[free], minlength=n_g).astype(np.float64)
        wt = np.zeros((n_g, kw))
        np.add.at(wt, wg[free], np.asarray(w_term, dtype=np.float64)[free])
        at = np.zeros((n_l, na))
        a_cols = np.searchsorted(lev, np.asarray(t.a_choices))
        at[:, a_cols] = np.asarray(a_term, dtype=np.float64)
        wc = nch[:, None, None] * cost.w_coef[gl]  # (G, Kw, A)
        sep = cost.separable
        zero = t.w_choices.index(0) if 0 in t.w_choices else None
        memory = cost.peak_in is not None
        use_z = memory and zero is not None
        # variable layout
        n_x = n_g * kw * (1 if sep else na)
        off_y = n_x
        off_z = off_y + n_l * na
        n_z = n_g * na if use_z else 0
        off_p = off_z + n_z
        n_var = off_p + (1 if memory else 0)

        def xi(g: np.ndarray, k: np.ndarray | int, j: np.ndarray | int | None = None
               ) -> np.ndarray:
            if sep:
                return np.asarray(g) * kw + k
            return (np.asarray(g) * kw + k) * na + (0 if j is None else j)

        def yi(li: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
            return off_y + np.asarray(li) * na + j

        # objective: normalised sensitivity, plus a tiny cost tie-break
        cost_vec = np.zeros(n_var)
        obj = np.zeros(n_var)
        if sep:
            obj[:n_x] = wt.ravel()
            cost_vec[:n_x] = wc[:, :, 0].ravel()
        else:
            obj[:n_x] = np.repeat(wt[:, :, None], na, axis=2).ravel()
            cost_vec[:n_x] = wc.ravel()
        obj[off_y:off_z] = at.ravel()
        cost_vec[off_y:off_z] = cost.a_coef.ravel()
        if memory:
            cost_vec[off_p] = 1.0
        # HiGHS stops at an absolute gap of 1e-6 (not settable through scipy), so scale the
        # objective to make its lower bound (every gene at its best choice) about 1: the
        # solution is then optimal to ~1e-6 relative, not to 1e-6 of the largest term
        top = float(wt.max(axis=1).sum() + at.max(axis=1).sum()) if n_var else 0.0
        floor = float(wt.min(axis=1).sum() + at[:, a_cols].min(axis=1).sum()) if n_var else 0.0
        scale = max(floor, 1e-6 * top)
        self.obj_scale = scale if scale > 0 else 1.0
        lo_hi = self._extremes(t, cost)
        span = max(lo_hi[1] - lo_hi[0], abs(lo_hi[1]), 1e-300)
        self.c = obj / self.obj_scale + 1e-7 * cost_vec / span
        self.cost_vec = cost_vec

        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        lb: list[float] = []
        ub: list[float] = []
        r = 0

        def add(rr: np.ndarray, cc: np.ndarray, vv: np.ndarray | float) -> None:
            rr, cc = np.broadcast_arrays(np.asarray(rr), np.asarray(cc))
            vals.append(np.broadcast_to(np.asarray(vv, dtype=float), rr.shape).ravel())
            rows.append(rr.ravel())
            cols.append(cc.ravel())

        g_all = np.arange(n_g)
        # one choice per weight gene (tied to the layer's activation choice if joint)
        if sep:
            for k in range(kw):
                add(r + g_all, xi(g_all, k), 1.0)
            lb += [1.0] * n_g
            ub += [1.0] * n_g
            r += n_g
        else:
            for j in range(na):
                rr = r + g_all * na + j
                for k in range(kw):
                    add(rr, xi(g_all, k, j), 1.0)
                add(rr, yi(gl, j), -1.0)
            lb += [0.0] * (n_g * na)
            ub += [0.0] * (n_g * na)
            r += n_g * na
        # one activation level per layer
        l_all = np.arange(n_l)
        for j in range(na):
            add(r + l_all, yi(l_all, j), 1.0)
        lb += [1.0] * n_l
        ub += [1.0] * n_l
        r += n_l
        # keep at least one channel per searched layer

        def x0_terms(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Column indices whose sum is 'gene g pruned', with the owner of each."""
            assert zero is not None
            if sep:
                return xi(g, zero), g
            idx = np.stack([xi(g, zero, j) for j in range(na)], axis=1)
            return idx.ravel(), np.repeat(g, na)

        if keep_channel and zero is not None and n_g:
            layers = np.unique(gl)
            g_per_layer = np.bincount(gl, minlength=n_l)
            ci, owner = x0_terms(g_all)
            row_of_layer = np.full(n_l, -1)
            row_of_layer[layers] = r + np.arange(len(layers))
            add(row_of_layer[gl[owner]], ci, 1.0)
            lb += [0.0] * len(layers)
            ub += [float(v) - 1.0 for v in g_per_layer[layers]]
            r += len(layers)
        # budget row
        self.budget_row = r
        nz = np.nonzero(cost_vec)[0]
        add(np.full(nz.shape, r), nz, cost_vec[nz])
        lb.append(-np.inf)
        ub.append(np.inf)
        r += 1
        # memory: peak >= every layer's input + output buffer
        if memory:
            assert cost.peak_in is not None and cost.peak_out is not None
            for li in range(n_l):
                add(np.full(na, r), yi(li, np.arange(na)), cost.peak_in[li])
                lay = t.layers[li]
                last = li == n_l - 1
                genes = np.nonzero(gl == li)[0]
                const = 0.0
                if lay.w_pinned is not None:
                    kept = float(lay.out_channels if lay.w_pinned > 0 else 0)
                    if last:
                        const += cost.peak_out[li] * kept * cost.last_bits
                    else:
                        add(np.full(na, r), yi(li + 1, np.arange(na)),
                            cost.peak_out[li] * kept * lev)
                elif last:
                    # kept channels at the fixed output width: linear in 'pruned'
                    const += cost.peak_out[li] * nch[genes].sum() * cost.last_bits
                    if zero is not None and len(genes):
                        ci, owner = x0_terms(genes)
                        add(np.full(ci.shape, r), ci,
                            -cost.peak_out[li] * nch[owner] * cost.last_bits)
                elif use_z:
                    zi = off_z + genes[:, None] * na + np.arange(na)[None, :]
                    add(np.full(zi.shape, r), zi,
                        (cost.peak_out[li] * nch[genes])[:, None] * lev[None, :])
                else:  # nothing can be pruned: every channel is kept
                    add(np.full(na, r), yi(li + 1, np.arange(na)),
                        cost.peak_out[li] * nch[genes].sum() * lev)
                add(np.array([r]), np.array([off_p]), -1.0)
                lb.append(-np.inf)
                ub.append(-const)
                r += 1
            if use_z:  # z[g, j] >= kept_g + y[li+1, j] - 1 = y[li+1, j] - pruned_g
                gz = np.nonzero(gl != n_l - 1)[0]
                pos = np.full(n_g, -1)
                pos[gz] = np.arange(len(gz))
                ci, owner = x0_terms(gz)
                for j in range(na):
                    rr = r + np.arange(len(gz)) * na + j
                    add(rr, off_z + gz * na + j, -1.0)
                    add(rr, yi(gl[gz] + 1, j), 1.0)
                    add(r + pos[owner] * na + j, ci, -1.0)
                lb += [-np.inf] * (len(gz) * na)
                ub += [0.0] * (len(gz) * na)
                r += len(gz) * na
        self.A = sparse.csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(r, n_var),
        )
        self.lb, self.ub = np.array(lb), np.array(ub)
        # bounds and integrality
        vlb = np.zeros(n_var)
        vub = np.ones(n_var)
        allowed = np.zeros((n_l, na), dtype=bool)
        for li, lay in enumerate(t.layers):
            if lay.a_pinned is None:
                allowed[li, a_cols] = True
            else:
                allowed[li, np.searchsorted(lev, lay.a_pinned)] = True
        vub[off_y:off_z] = allowed.ravel()
        if n_z:
            vub[off_z:off_p] = np.inf
        if memory:
            vub[off_p] = np.inf
        self.bounds = Bounds(vlb, vub)
        integ = np.zeros(n_var)
        integ[:off_z] = 1
        self.integrality = integ
        self.n_x, self.off_y, self.na, self.kw, self.n_g, self.sep = n_x, off_y, na, kw, n_g, sep
        self.lo, self.hi = lo_hi

    @staticmethod
    def _extremes(t: LayerTable, cost: BudgetCost) -> tuple[float, float]:
        g = np.stack([np.zeros(t.n_genes, np.int8), (t.gene_n_levels - 1).astype(np.int8)])
        lo, hi = cost.evaluate(t, g)
        return float(lo), float(hi)

    def cost_range(self, time_limit: float = 60.0) -> tuple[float, float]:
        """(cheapest feasible cost, cost of the all-highest configuration)."""
        g, status = self.solve(np.inf, time_limit, c=self.cost_vec)
        if status == LIMIT:
            log.warning("ilp (%s): the search for the cheapest configuration hit the time "
                        "limit of %gs; the sweep starts from the best found (raise "
                        "[baselines.ilp] time_limit_s)", self.cost.metric, time_limit)
        lo = self.lo if g is None else float(self.cost.evaluate(self.table, g[None])[0])
        return lo, self.hi

    def solve(self, budget: float, time_limit: float = 60.0, c: np.ndarray | None = None
              ) -> tuple[np.ndarray | None, int]:
        ub = self.ub.copy()
        ub[self.budget_row] = budget
        res = milp(self.c if c is None else c, integrality=self.integrality,
                   bounds=self.bounds, constraints=LinearConstraint(self.A, self.lb, ub),
                   options={"time_limit": time_limit, "mip_rel_gap": 1e-9})
        if res.x is None:
            return None, int(res.status)
        x = np.rint(res.x)
        t = self.table
        if self.sep:
            k = x[: self.n_x].reshape(self.n_g, self.kw).argmax(axis=1)
        else:
            k = x[: self.n_x].reshape(self.n_g, self.kw, self.na).sum(axis=2).argmax(axis=1)
        j = x[self.off_y : self.off_y + t.n_layers * self.na].reshape(t.n_layers, self.na
                                                                      ).argmax(axis=1)
        lev = self.cost.a_levels
        g = np.zeros(t.n_genes, dtype=np.int8)
        g[: self.n_g] = k
        ag = t.a_gene_of_layer
        free = ag >= 0
        g[ag[free]] = np.searchsorted(np.asarray(t.a_choices), lev[j[free]])
        return g, int(res.status)


def solve_ilp(table: LayerTable, w_term: np.ndarray, a_term: np.ndarray, cost: BudgetCost,
              budget: float, *, keep_channel: bool = True, time_limit: float = 60.0
              ) -> IlpSolution:
    """Minimise the summed sensitivity term subject to ``cost <= budget`` (one solve).

    Args:
        table: the layer table; its granularity decides the genes (channel or layer).
        w_term: ``(n_channels, len(w_choices))`` per-channel term at each weight choice.
        a_term: ``(n_layers, len(a_choices))`` per-layer term at each activation choice.
        cost: the budget metric from :func:`budget_cost` (built on the same layers).
        budget: upper bound on the metric.
        keep_channel: keep at least one channel in every searched layer.
        time_limit: seconds for the solver.
    """
    return ilp_sweep(table, w_term, a_term, cost, [budget], keep_channel=keep_channel,
                     time_limit=time_limit)[0]


def sweep_budgets(lo: float, hi: float, points: int, min_fraction: float = 0.04,
                  spacing: str = "geometric") -> np.ndarray:
    """``(points,)`` budgets from ``lo + min_fraction * (hi - lo)`` up to ``hi``.

    Raises:
        EvompError: ``points < 1``, ``min_fraction`` outside (0, 1] or an unknown spacing.
    """
    if points < 1:
        raise EvompError(f"--points must be at least 1, got {points}")
    if not 0 < min_fraction <= 1:
        raise EvompError(f"[baselines.ilp] min_fraction must lie in (0, 1], got {min_fraction}")
    if spacing == "geometric":
        f = np.geomspace(min_fraction, 1.0, points) if points > 1 else np.ones(1)
    elif spacing == "linear":
        f = np.linspace(min_fraction, 1.0, points) if points > 1 else np.ones(1)
    else:
        raise EvompError(
            f"[baselines.ilp] spacing must be 'geometric' or 'linear', got {spacing!r}")
    return lo + f * (hi - lo)


def ilp_sweep(table: LayerTable, w_term: np.ndarray, a_term: np.ndarray, cost: BudgetCost,
              budgets: Any = None, *, points: int = 8, min_fraction: float = 0.04,
              spacing: str = "geometric", keep_channel: bool = True, time_limit: float = 60.0
              ) -> list[IlpSolution]:
    """Solve for each budget (the program is built once).

    Args:
        table / w_term / a_term / cost / keep_channel / time_limit: as in :func:`solve_ilp`.
        budgets: iterable of budgets; None: :func:`sweep_budgets` from the cheapest
            feasible configuration (found by the same program) to the all-highest one,
            with ``points``, ``min_fraction`` and ``spacing``.

    Returns:
        One :class:`IlpSolution` per budget, in order. A solve cut short by
        ``time_limit`` (status 1) is logged as a warning; its genome, if any, is the best
        found and ``proven_optimal`` is False.
    """
    w_term = np.asarray(w_term, dtype=np.float64)
    a_term = np.asarray(a_term, dtype=np.float64)
    if w_term.shape != (table.n_channels, len(table.w_choices)):
        raise ValueError(f"w_term must be ({table.n_channels}, {len(table.w_choices)}), "
                         f"got {w_term.shape}")
    if a_term.shape != (table.n_layers, len(table.a_choices)):
        raise ValueError(f"a_term must be ({table.n_layers}, {len(table.a_choices)}), "
                         f"got {a_term.shape}")
    prog = _Program(table, w_term, a_term, cost, keep_channel)
    if budgets is None:
        budgets = sweep_budgets(*prog.cost_range(time_limit), points, min_fraction, spacing)
    out = []
    for b in budgets:
        t0 = time.perf_counter()
        g, status = prog.solve(float(b), time_limit)
        sec = time.perf_counter() - t0
        if status == LIMIT:
            log.warning(
                "ilp (%s <= %.6g): the solver hit its time limit of %gs; %s (raise "
                "[baselines.ilp] time_limit_s for an exact solution)", cost.metric, b,
                time_limit, "its best configuration is kept but NOT proven optimal"
                if g is not None else "no configuration was found (budget not proven "
                "infeasible)")
        if g is None:
            out.append(IlpSolution(None, float(b), float("nan"), float("nan"), status, sec))
            continue
        c = float(cost.evaluate(table, g[None])[0])
        obj = float(objective_value(table, w_term, a_term, g[None])[0])
        out.append(IlpSolution(g, float(b), c, obj, status, sec))
    return out


def objective_value(table: LayerTable, w_term: np.ndarray, a_term: np.ndarray,
                    genomes: np.ndarray) -> np.ndarray:
    """``(n,)`` summed sensitivity term of genomes (free channels and free activations)."""
    g = table.check_genomes(genomes)
    wg = table.w_gene_of_channel
    free = np.nonzero(wg >= 0)[0]
    k = g[:, wg[free]]
    tot = np.asarray(w_term)[free[None, :], k].sum(axis=1)
    ag = table.a_gene_of_layer
    fl = np.nonzero(ag >= 0)[0]
    return tot + np.asarray(a_term)[fl[None, :], g[:, ag[fl]]].sum(axis=1)


# ------------------------------------------------------------------------- method
def layer_table(table: LayerTable, granularity: str) -> LayerTable:
    """``table`` at another granularity (same layers and choices)."""
    if granularity == table.granularity:
        return table
    return LayerTable(table.layers, table.w_choices, table.a_choices, granularity)


def to_space(src: LayerTable, dst: LayerTable, genomes: np.ndarray) -> np.ndarray:
    """Re-encode genomes of ``src`` into ``dst`` (same layers; via decoded bits)."""
    if src is dst:
        return np.asarray(genomes, dtype=np.int8)
    w, a = src.decode(genomes)
    try:
        return dst.encode(w, a)
    except ValueError as e:
        raise EvompError(f"cannot express these configurations in this space: {e}") from e


@register_method("ilp")
def ilp_method(ctx: RunContext, objectives: Objectives, opts: BaselineOptions
               ) -> BaselineResult:
    """HAWQ-V3-style ILP sweep (see the module docstring); ``[baselines.ilp]`` in DEFAULTS."""
    from evomp.evaluation import run_profile
    from evomp.space import genome_hash

    p = check_params("ilp", opts.params, DEFAULTS)
    table = ctx.space.table
    gran = table.granularity if p["granularity"] == "auto" else p["granularity"]
    if gran not in ("channel", "layer"):
        raise EvompError(f"[baselines.ilp] granularity must be 'auto', 'channel' or 'layer', "
                         f"got {gran!r}")
    if gran == "channel" and table.granularity == "layer":
        raise EvompError("[baselines.ilp] granularity = 'channel' needs a channel-wise space; "
                         "set [space] granularity = 'channel' or use 'layer'")
    solve_table = layer_table(table, gran)
    metric = p["metric"] or objectives.hw_metrics[0]
    model = objectives.lookup(metric)
    cost = budget_cost(solve_table, model, metric, seed=ctx.spec.seed)
    s = ctx.spec.search
    prof = run_profile(ctx, method=s.sensitivity, probes=s.probes)
    w_term, a_term = sensitivity_terms(solve_table, prof)
    points = opts.points or int(p["points"])
    sols = ilp_sweep(solve_table, w_term, a_term, cost, None, points=points,
                     min_fraction=float(p["min_fraction"]), spacing=p["spacing"],
                     keep_channel=bool(p["keep_channel"]), time_limit=float(p["time_limit_s"]))
    found = [s_ for s_ in sols if s_.genome is not None]
    if not found:
        if any(s_.cut_short for s_ in sols):
            raise EvompError(f"the ILP found no configuration under any budget of {metric} "
                             "within its time limit; raise [baselines.ilp] time_limit_s")
        raise EvompError(f"the ILP found no configuration under any budget of {metric}; "
                         "raise [baselines.ilp] min_fraction")
    genomes = to_space(solve_table, table,
                       np.stack([s_.genome for s_ in found if s_.genome is not None]))
    hashes = iter([genome_hash(g) for g in genomes])  # in the run's space, as front.csv's
    _, first = np.unique(genomes, axis=0, return_index=True)
    genomes = genomes[np.sort(first)]
    log.info("ilp (%s, %s): %d budgets, %d distinct configurations, %.2fs of solving",
             gran, metric, len(sols), len(genomes), sum(s_.seconds for s_ in sols))
    sweep = [{"budget": s_.budget, "cost": s_.cost, "objective": s_.objective,
              "status": s_.status, "proven_optimal": s_.proven_optimal,
              "genome_hash": None if s_.genome is None else next(hashes),
              "seconds": round(s_.seconds, 4)} for s_ in sols]
    # configurations no solve proved optimal (under any budget of the sweep)
    proven = {e["genome_hash"] for e in sweep if e["proven_optimal"]}
    open_ = sorted({e["genome_hash"] for e in sweep
                    if e["genome_hash"] is not None and e["genome_hash"] not in proven})
    if open_:
        log.warning("ilp: %d of %d configurations are not proven optimal (time limit %gs)",
                    len(open_), len(genomes), float(p["time_limit_s"]))
    info = {
        "params": p,  # defaults merged with [baselines.ilp]
        "granularity": gran,
        "metric": metric,
        "points": points,
        "sweep": sweep,
        "all_proven_optimal": not open_,
        "not_proven_optimal": open_,  # genome hashes (front.csv's genome_hash)
        "solve_seconds": sum(s_.seconds for s_ in sols),
        "sensitivity": {"method": prof.meta.get("method"), "probes": prof.meta.get("n_probes")},
    }
    return BaselineResult(genomes, info)

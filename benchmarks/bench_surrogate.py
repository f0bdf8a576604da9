"""Rank quality of the accuracy predictors on the demo model, against real short QAT.

Design: ~60 genomes of the demo space (MNIST-1D, cnn1d, weights per channel in
{0, 2, 4, 8}, activations per layer in {2, 4, 8}): uniform configurations,
sensitivity-ordered assignments at several memory budgets (uncapped pruning, so the
low budgets include networks with whole layers pruned), and random ones (random
level mixes and perturbed sensitivity-ordered genomes). Each is evaluated with the
evaluator's short QAT; results are cached under ``benchmarks/results/`` so a re-run is
fast. Every predictor is trained on 40 and scored on the other 20 (Kendall tau,
Spearman, MAE, top-5 overlap) next to the HAWQ proxy; the same is repeated over 10
random 40/20 splits for a less noisy view. The feature throughput on a 5,000-channel
space is measured too.

Run: ``.venv/bin/python benchmarks/bench_surrogate.py`` (``--quick`` for 24 genomes).
Writes ``benchmarks/results/bench_surrogate.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import surrogates as S
from evomp import Evaluator, QATConfig, SearchSpace, TrainConfig, get_task, pretrain
from evomp.quant import fake_quant_act, fake_quant_weight
from evomp.tasks import batches
from hwmodels import Layer, LayerTable

RESULTS = Path(__file__).resolve().parent / "results"
WORKING = 0.5  # validation accuracy above which a network "works" (chance is 0.1)
CACHE = RESULTS / "bench_surrogate"


def design(space: SearchSpace, prof: S.SensitivityProfile, n: int, seed: int) -> tuple:
    """``(genomes (n, n_genes), kinds)``: uniform, sensitivity-ordered and random."""
    t = space.table
    rng = np.random.default_rng(seed)
    out, kinds = [], []
    for w in (2, 4, 8):
        for a in (2, 4, 8):
            out.append(space.uniform(w, a)[0])
            kinds.append(f"uniform w{w}a{a}")
    n_rest = n - len(out)
    n_sens = round(n_rest * 0.35)
    budgets = np.geomspace(0.04, 0.75, n_sens)
    for i, b in enumerate(budgets):
        a = (8, 4, 8, 2)[i % 4] if i % 3 else 8
        out.append(S.sensitivity_order_genome(t, prof, b, a_bits=a, max_prune_share=1.0)[0])
        kinds.append(f"sensitivity b={b:.3f} a{a}")
    n_rand = n - len(out)
    hi = t.gene_n_levels
    n_wg = t.n_w_genes
    for i in range(n_rand):
        if i % 2 == 0:
            # a random mix of levels: Dirichlet probabilities per genome, skewed to 8 bit
            p = rng.dirichlet([0.6, 0.8, 1.0, 1.6])
            g = np.empty(t.n_genes, dtype=np.int8)
            g[:n_wg] = rng.choice(len(t.w_choices), size=n_wg, p=p)
            g[n_wg:] = rng.integers(0, hi[n_wg:])
            kinds.append("random mix")
        else:
            # a sensitivity-ordered genome with 10-40% of its genes redrawn
            b = float(np.exp(rng.uniform(np.log(0.05), np.log(0.6))))
            g = S.sensitivity_order_genome(t, prof, b, a_bits=8, max_prune_share=1.0)[0].copy()
            m = rng.random(t.n_genes) < rng.uniform(0.1, 0.4)
            g[m] = (rng.random(m.sum()) * hi[m]).astype(np.int8)
            kinds.append(f"perturbed b={b:.3f}")
        out.append(g)
    return np.stack(out).astype(np.int8), kinds


def predictors(seed: int) -> dict:
    return {
        "gp": S.GPSurrogate(random_state=seed),
        "gp_ard": S.GPSurrogate(ard=True, n_restarts_optimizer=0, random_state=seed),
        "forest": S.ForestSurrogate(random_state=seed),
        "boosting": S.BoostingSurrogate(random_state=seed),
        "hawq_proxy": S.HawqProxy(),
        "auto": S.AutoSurrogate(random_state=seed),
    }


def score_split(F: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int
                ) -> dict:
    res = {}
    for name, est in predictors(seed).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(F[tr], y[tr])
            mean, std = est.predict(F[te], return_std=True)
        q = S.rank_quality(y[te], mean, k=5)
        q["mean_std"] = float(np.mean(std))
        # the same predictions ranked among the held-out networks that work at all (the
        # design's uncapped pruning makes some collapse to chance, which are easy to rank)
        keep = y[te] >= WORKING
        q["tau_working"] = (float(S.rank_quality(y[te][keep], mean[keep], k=3)["kendall_tau"])
                            if keep.sum() >= 5 else float("nan"))
        q["n_working"] = int(keep.sum())
        if name == "auto":
            q["picked"] = est.best_name_
        res[name] = q
    return res


def throughput(n_genomes: int = 50_000) -> dict:
    """Genomes per second of GenomeFeatures on a synthetic 5,000-channel space."""
    rng = np.random.default_rng(0)
    n_l, c = 20, 250
    layers = tuple(
        Layer(name=f"l{i}", kind="linear", in_channels=64, out_channels=c, kernel_size=(),
              groups=1, fan_in=64, macs_per_channel=64, in_shape=(64,), out_shape=(c,),
              w_pinned=8 if i in (0, n_l - 1) else None)
        for i in range(n_l)
    )
    t = LayerTable(layers, (0, 2, 4, 8), (2, 4, 8))
    nc = t.n_channels
    prof = S.SensitivityProfile(
        w_sens=rng.random(nc), layer_trace=rng.random(n_l),
        w_err=np.sort(rng.random((nc, 4)))[:, ::-1], a_sens=rng.random(n_l),
        a_noise=np.sort(rng.random((n_l, 3)))[:, ::-1], layer_names=[x.name for x in layers],
        w_choices=(0, 2, 4, 8), a_choices=(2, 4, 8), w_numel=np.full(nc, 64),
        a_numel=np.full(n_l, 64), a_signed=np.zeros(n_l, bool),
        meta={"layer_start": t.layer_start.tolist()},
    )
    g = (rng.random((n_genomes, t.n_genes)) * t.gene_n_levels).astype(np.int8)
    f = S.GenomeFeatures(t, prof).fit(g[:10])
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        f.transform(g)
        best = min(best, time.perf_counter() - t0)
    return {"n_channels": nc, "n_genes": t.n_genes, "genomes": n_genomes,
            "seconds": best, "genomes_per_s": n_genomes / best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="design size (train 2/3, test 1/3)")
    ap.add_argument("--quick", action="store_true", help="24 genomes, 100 QAT steps")
    ap.add_argument("--steps", type=int, default=300, help="short-QAT steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.steps = 24, 100
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    task = get_task("mnist1d", seed=args.seed)
    model, info = pretrain(task, TrainConfig(epochs=40), cache_path=CACHE / "float.pt")
    how = "cached" if info.get("cached") else f"{info['seconds']:.0f} s"
    print(f"float model: val {info['val_accuracy']:.4f}  test {info['test_accuracy']:.4f}"
          f"  ({how})")
    space = SearchSpace.from_model(model, task.example_input(), w_bits=(0, 2, 4, 8),
                                   a_bits=(2, 4, 8))
    layers = [(n, model.get_submodule(n)) for n in space.layer_names]
    data = [(x, y) for (x, y), _ in zip(batches(task.train, 256), range(4), strict=False)]
    prof_path = CACHE / "sensitivity.npz"
    fp = S.fingerprint(model, data)
    if prof_path.is_file():
        try:
            prof = S.SensitivityProfile.load(prof_path, expect_fingerprint=fp,
                                             layer_names=space.layer_names)
        except ValueError:
            prof_path.unlink()
    if not prof_path.is_file():
        model.eval()
        prof = S.compute_sensitivity(
            model, layers, data, task.loss_fn, quantize_weight=fake_quant_weight,
            quantize_act=lambda x, b, s: fake_quant_act(x, b, s), w_choices=space.w_bits,
            a_choices=space.a_bits, n_probes=16, n_batches=4, seed=args.seed,
        )
        prof.save(prof_path)
    print(f"sensitivity: {prof.meta['method']}, {prof.meta['n_probes']} probes, "
          f"{prof.meta['seconds']:.1f} s; {space.table.n_channels} channels, "
          f"{space.n_genes} genes")

    genomes, kinds = design(space, prof, args.n, args.seed)
    ev = Evaluator(task, space, model, qat=QATConfig(steps=args.steps, seed=args.seed),
                   cache_file=CACHE / f"evals-steps{args.steps}.jsonl")
    t0 = time.perf_counter()
    res = []
    for i, g in enumerate(genomes):
        r = ev.evaluate(g[None], fidelity="short")[0]
        res.append(r)
        print(f"  [{i + 1:2d}/{len(genomes)}] {kinds[i]:28s} val {r.val_accuracy:.4f} "
              f"ptq {r.ptq_accuracy:.4f} ({r.seconds:.1f} s)", flush=True)
    eval_s = time.perf_counter() - t0
    ok = np.array([not r.failed and np.isfinite(r.val_accuracy) for r in res])
    y = np.array([r.val_accuracy for r in res])[ok]
    ptq = np.array([r.ptq_accuracy for r in res])[ok]
    g_ok = genomes[ok]

    feats = {
        "genome": S.GenomeFeatures(space.table, prof).fit(g_ok),
        "genome+ptq": S.GenomeFeatures(space.table, prof, n_extra=1).fit(
            np.column_stack([g_ok, ptq])),
    }
    X = {"genome": g_ok, "genome+ptq": np.column_stack([g_ok, ptq])}
    F = {k: f.transform(X[k]) for k, f in feats.items()}

    n = len(y)
    n_tr = round(n * 2 / 3)
    perm = np.random.default_rng(args.seed).permutation(n)
    main_split = {k: score_split(F[k], y, perm[:n_tr], perm[n_tr:], args.seed) for k in F}
    reps: dict = {k: {} for k in F}
    for rep in range(10):
        p = np.random.default_rng(1000 + rep).permutation(n)
        for k in F:
            for name, q in score_split(F[k], y, p[:n_tr], p[n_tr:], args.seed).items():
                reps[k].setdefault(name, []).append(q)
    summary = {
        k: {name: {m: (float(np.nanmean([q[m] for q in qs])), float(np.nanstd([q[m] for q in qs])))
                   for m in ("kendall_tau", "spearman", "mae", "topk_overlap")}
            for name, qs in v.items()}
        for k, v in reps.items()
    }
    picks = {k: {} for k in F}
    for k in F:
        for q in reps[k]["auto"]:
            picks[k][q["picked"]] = picks[k].get(q["picked"], 0) + 1
    # the PTQ accuracy alone, as a zero-training predictor of the QAT accuracy
    ptq_only = S.rank_quality(y[perm[n_tr:]], ptq[perm[n_tr:]], k=5)

    print(f"\n{n} evaluated genomes ({(~ok).sum()} failed), accuracy "
          f"{y.min():.3f} .. {y.max():.3f}; train {n_tr}, held out {n - n_tr} "
          f"({int((y[perm[n_tr:]] >= WORKING).sum())} of them >= {WORKING}: column tau>=.5)")
    hdr = f"{'features':11s} {'predictor':11s} {'tau':>6s} {'spear':>6s} {'MAE':>6s} " \
          f"{'top5':>5s} {'tau>=.5':>7s} | {'tau 10 splits':>14s} {'MAE 10 splits':>14s}"
    print(hdr)
    print("-" * len(hdr))
    for k in F:
        for name, q in main_split[k].items():
            s = summary[k][name]
            extra = f"  (picked {q['picked']})" if name == "auto" else ""
            print(f"{k:11s} {name:11s} {q['kendall_tau']:6.3f} {q['spearman']:6.3f} "
                  f"{q['mae']:6.3f} {q['topk_overlap']:5.2f} {q['tau_working']:7.3f} | "
                  f"{s['kendall_tau'][0]:6.3f}±{s['kendall_tau'][1]:5.3f}  "
                  f"{s['mae'][0]:6.3f}±{s['mae'][1]:5.3f}{extra}")
    print(f"{'ptq only':11s} {'-':11s} {ptq_only['kendall_tau']:6.3f} "
          f"{ptq_only['spearman']:6.3f} {ptq_only['mae']:6.3f} {ptq_only['topk_overlap']:5.2f}")
    tp = throughput()
    print(f"\nfeatures: {tp['genomes_per_s']:,.0f} genomes/s on {tp['n_channels']} channels "
          f"({tp['n_genes']} genes)")

    out = {
        "design": {"n": int(args.n), "evaluated": int(n), "failed": int((~ok).sum()),
                   "qat_steps": args.steps, "eval_seconds": eval_s,
                   "kinds": kinds, "val_accuracy": [r.val_accuracy for r in res],
                   "ptq_accuracy": [r.ptq_accuracy for r in res]},
        "float": info,
        "sensitivity_meta": prof.meta,
        "split": {"train": int(n_tr), "test": int(n - n_tr), "seed": args.seed},
        "held_out": main_split,
        "repeated_10_splits": summary,
        "auto_picks_10_splits": picks,
        "ptq_only": ptq_only,
        "feature_throughput": tp,
        "seconds": time.perf_counter() - t_start,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_surrogate.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {RESULTS / 'bench_surrogate.json'}")


if __name__ == "__main__":
    main()

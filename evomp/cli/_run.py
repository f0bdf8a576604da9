"""``evomp run SPEC``: create or resume a run."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="create or resume a run of a spec")
    p.add_argument("spec", help="run specification (TOML), e.g. runs/demo.toml")
    p.add_argument("--out", help="run directory (default runs/<name>/)")
    p.add_argument("--threads", type=int, help="torch threads (default: spec, else all cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp._evaluate import evaluate_uniform
    from evomp._runner import open_run
    from evomp._spec import load_spec

    spec = load_spec(args.spec)
    ctx = open_run(spec, args.out, args.threads)
    fi = ctx.float_info
    print(f"run directory: {ctx.out}")
    print(
        f"float model: val {fi['val_accuracy']:.4f}  test {fi['test_accuracy']:.4f}"
        + ("  (cached)" if fi.get("cached") else f"  ({fi['seconds']:.1f}s)")
    )
    settings = [(8, 8, "ptq"), (4, 4, "short"), (2, 2, "short")]
    settings = [s for s in settings if s[0] in ctx.space.w_bits and s[1] in ctx.space.a_bits]
    print(f"{'config':<16} {'val':>7} {'test':>7} {'ptq val':>8} {'seconds':>8}")
    for name, r in evaluate_uniform(ctx.evaluator, settings):
        status = f"FAILED: {r.reason}" if r.failed else ""
        print(
            f"{name:<16} {r.val_accuracy:>7.4f} {r.test_accuracy or float('nan'):>7.4f} "
            f"{r.ptq_accuracy:>8.4f} {r.seconds:>8.1f} {status}"
        )
    return 0

"""``evomp space SPEC [--json]``: the layer table and genome size of a spec's model."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="print the layer table and genome size of a spec's model")
    p.add_argument("spec", help="run specification (TOML)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.run import build_space, load_spec

    spec = load_spec(args.spec)
    space = build_space(spec)
    t = space.table
    rows = space.describe()
    if args.json:
        print(
            json.dumps(
                {
                    "layers": rows,
                    "n_genes": t.n_genes,
                    "n_weight_genes": t.n_w_genes,
                    "n_activation_genes": t.n_a_genes,
                    "n_channels": t.n_channels,
                    "w_bits": list(t.w_choices),
                    "a_bits": list(t.a_choices),
                    "granularity": t.granularity,
                },
                indent=2,
            )
        )
        return 0
    cols = ["name", "kind", "in", "out", "kernel", "groups", "fan_in", "macs", "in_shape",
            "out_shape", "w_genes", "a_gene", "pinned"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    print(
        f"\n{len(rows)} layers, {t.n_channels} weight channels; genome: {t.n_genes} genes "
        f"({t.n_w_genes} weight, {t.n_a_genes} activation), granularity={t.granularity}, "
        f"w_bits={list(t.w_choices)}, a_bits={list(t.a_choices)}"
    )
    return 0

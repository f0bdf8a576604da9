"""``evomp hw``: list the hardware models, and cost uniform configurations of a spec's model.

    evomp hw list [--json]
    evomp hw cost SPEC --uniform 8/8 [--uniform 2/2 ...] [--model NAME ...]
                  [--param MODEL.KEY=VALUE ...] [--layers] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

__all__ = ["register"]

_UNIFORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hw", help="hardware cost models: list them, cost a spec's model")
    hsub = hw.add_subparsers(dest="hw_command", metavar="HW_COMMAND")
    hsub.required = True

    p = hsub.add_parser("list", help="every available model with its metrics and parameters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)

    p = hsub.add_parser(
        "cost",
        help="every model's metrics for uniform bit-widths of a spec's model",
        description="Cost uniform configurations (every searched weight channel at W bits, "
        "every searched activation at A bits; pinned layers keep their pins). W and A need "
        "not be among the spec's choices. Model parameters come from the spec's [hw.<model>] "
        "tables and --param.",
    )
    p.add_argument("spec", help="run specification (TOML)")
    p.add_argument("--uniform", action="append", required=True, metavar="W/A",
                   help="weight/activation bits, e.g. 8/8; repeat to compare configurations")
    p.add_argument("--model", action="append", default=None, metavar="NAME",
                   help="cost only these models (repeatable; default: every model that can "
                   "be built with the spec's parameters)")
    p.add_argument("--param", action="append", default=[], metavar="MODEL.KEY=VALUE",
                   help="model parameter, e.g. pulp.preset=xpulpnn (VALUE is JSON or text)")
    p.add_argument("--layers", action="store_true", help="add a per-layer breakdown")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_cost)


# --------------------------------------------------------------------------------- list
def run_list(args: argparse.Namespace) -> int:
    import hwmodels

    infos = [hwmodels.model_class(n).describe() for n in hwmodels.available()]
    errors = hwmodels.plugin_errors()
    if args.json:
        print(json.dumps({"models": infos, "plugin_errors": errors}, indent=2, default=repr))
        return 0
    for info in infos:
        flag = "" if info["vectorized"] else "  [not vectorized: loops over genomes]"
        print(f"{info['name']}: {info['summary']}{flag}")
        print("  metrics:")
        if info["metrics"]:
            w = max(len(m) for m in info["metrics"])
            for m, unit in info["metrics"].items():
                print(f"    {m.ljust(w)}  {unit}")
        else:
            print("    (set by its parameters)")
        if info["parameters"]:
            print("  parameters:")
            rows = [(f"{k}={v['default']!r}", v["description"])
                    for k, v in info["parameters"].items()]
            w = max(len(r[0]) for r in rows)
            for k, d in rows:
                print(f"    {k.ljust(w)}  {d}")
        print()
    for name, msg in errors.items():
        print(f"{name}: plugin failed to load: {msg}")
    return 0


# --------------------------------------------------------------------------------- cost
def _parse_uniform(text: str) -> tuple[int, int]:
    from evomp._errors import EvompError
    from hwmodels import MAX_BITS

    m = _UNIFORM.match(text)
    if not m:
        raise EvompError(f"--uniform {text!r} is not W/A, e.g. 8/8 or 4/8")
    w, a = int(m.group(1)), int(m.group(2))
    if not 0 <= w <= MAX_BITS or not 1 <= a <= MAX_BITS:
        raise EvompError(f"--uniform {text!r}: weight bits must lie in 0..{MAX_BITS} and "
                         f"activation bits in 1..{MAX_BITS}")
    return w, a


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    from evomp._errors import EvompError

    out: dict[str, dict[str, Any]] = {}
    for it in items:
        key, sep, val = it.partition("=")
        model, dot, name = key.strip().partition(".")
        if not sep or not dot or not model or not name:
            raise EvompError(f"--param {it!r} is not MODEL.KEY=VALUE, e.g. pulp.preset=xpulpnn")
        try:
            v: Any = json.loads(val)
        except json.JSONDecodeError:
            v = val
        out.setdefault(model, {})[name] = v
    return out


def _check_param_names(params: dict[str, dict[str, Any]]) -> None:
    """Every ``--param MODEL.KEY`` names a parameter of a registered model ``MODEL``.

    Raises:
        EvompError: an unknown key, naming the model's parameters.
    """
    from evomp._errors import EvompError
    from evomp.run import unknown_hw_parameter

    for model, kw in params.items():
        bad = unknown_hw_parameter(model, kw)
        if bad:
            raise EvompError(f"--param {model}.{bad[0]}: {bad[0]!r} {bad[1]}")


def _uniform_bits(table: Any, w: int, a: int) -> tuple[Any, Any]:
    import numpy as np

    wb = np.concatenate([
        np.full(lay.out_channels, w if lay.w_pinned is None else lay.w_pinned, dtype=np.int64)
        for lay in table.layers
    ])
    ab = np.array([a if lay.a_pinned is None else lay.a_pinned for lay in table.layers],
                  dtype=np.int64)
    return wb[None, :], ab[None, :]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def run_cost(args: argparse.Namespace) -> int:
    import hwmodels
    from evomp._errors import EvompError
    from evomp.run import build_space, load_spec

    configs = [_parse_uniform(u) for u in args.uniform]
    params = _parse_params(args.param)
    unknown = [n for n in list(params) + (args.model or []) if n not in hwmodels.available()]
    if unknown:
        raise EvompError(f"unknown hardware model(s) {unknown}; available: "
                         f"{hwmodels.available()} (see `evomp hw list`)")
    _check_param_names(params)
    spec = load_spec(args.spec)
    space = build_space(spec)
    table = space.table
    spec_hw = {k: dict(v) for k, v in (spec.hw or {}).items() if isinstance(v, dict)}
    names = args.model or hwmodels.available()
    models, skipped = [], {}
    for n in names:
        kw = {**spec_hw.get(n, {}), **params.get(n, {})}
        try:
            models.append(hwmodels.get(n, **kw))
        except ValueError as e:
            if args.model:  # asked for by name: the user wants to know
                raise EvompError(f"hardware model {n!r}: {e}") from e
            skipped[n] = str(e)

    results = []
    for w, a in configs:
        batch = hwmodels.BitBatch.from_bits(table, *_uniform_bits(table, w, a))
        res: dict[str, Any] = {"uniform": f"{w}/{a}", "metrics": {}, "errors": {}, "layers": {}}
        for m in models:
            try:
                vals = m.cost_batch(batch)
                res["metrics"][m.name] = {k: float(v[0]) for k, v in vals.items()}
                if args.layers:
                    res["layers"][m.name] = m.breakdown_batch(batch)
            except ValueError as e:
                res["errors"][m.name] = str(e)
        results.append(res)

    if args.json:
        print(json.dumps({
            "spec": spec.name,
            "n_layers": table.n_layers,
            "n_channels": table.n_channels,
            "units": {m.name: dict(m.metrics) for m in models},
            "configs": results,
            "skipped": skipped,
        }, indent=2))
        return 0

    print(f"{spec.name}: {table.n_layers} layers, {table.n_channels} weight channels; "
          f"uniform configurations (pinned layers keep their pins)")
    heads = [r["uniform"] for r in results]
    rows = []
    for m in models:
        for metric, unit in m.metrics.items():
            cells = []
            for r in results:
                if m.name in r["errors"]:
                    cells.append("n/a")
                else:
                    cells.append(_fmt(r["metrics"][m.name][metric]))
            rows.append([m.name, metric, *cells, unit.split(":")[0]])
    _table(["model", "metric", *heads, "unit"], rows, right=range(2, 2 + len(heads)))
    for r in results:
        for n, msg in r["errors"].items():
            print(f"\n{n} at {r['uniform']}: {msg}")
    if args.layers:
        for r in results:
            for n, lrows in r["layers"].items():
                print(f"\n{n} per layer at {r['uniform']}:")
                cols = list(lrows[0])
                _table(cols, [[_cell(x[c]) for c in cols] for x in lrows],
                       right=range(2, len(cols)))
    if skipped:
        print("\nskipped (need parameters; set them in the spec's [hw.<model>] or --param):")
        for n, msg in skipped.items():
            print(f"  {n}: {msg}")
    return 0


def _cell(v: Any) -> str:
    return _fmt(v) if isinstance(v, float) else str(v)


def _table(head: list[str], rows: list[list[str]], right: Any = ()) -> None:
    right = set(right)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    print(line(head))
    for r in rows:
        print(line(r))

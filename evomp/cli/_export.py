"""``evomp export DIR --pick ID|--best-under METRIC=VALUE --out OUT``."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a front member's integer weights, bit configuration and manifest",
        description="Writes bits.json, weights.npz (integer weights, per-channel scales and "
        "zero-points, activation scales), fakequant_state.pt, manifest.json and, with the "
        "onnx package installed, model.onnx with QuantizeLinear/DequantizeLinear nodes. "
        "Nothing is written unless the integer rebuild reproduces the fake-quant model.",
    )
    p.add_argument("dir", help="a finished run directory (search or baseline)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--pick", metavar="ID", help="front member id, e.g. p3 (see front.csv)")
    who.add_argument("--best-under", metavar="METRIC=VALUE",
                     help="the most accurate member with METRIC <= VALUE, e.g. "
                     "memory_bytes=10000")
    p.add_argument("--out", required=True, help="export directory (new or empty)")
    p.add_argument("--no-onnx", action="store_true", help="do not write model.onnx")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.reports import export_run

    res = export_run(args.dir, args.out, pick=args.pick, best_under=args.best_under,
                     onnx=not args.no_onnx, force=args.force)
    c = res.check
    print(f"exported front member {res.member} to {res.out}")
    print(f"  check on {c['inputs']} validation inputs: worst layer relative error "
          f"{c['max_layer_rel_error']:.2e} (<= {c['layer_rtol']:g}), predictions agree on "
          f"{100 * c['prediction_agreement']:.2f}%, max |output diff| "
          f"{c['output_max_abs_diff']:.2e}")
    o = res.onnx
    if o.get("status") == "written":
        extra = (f", onnxruntime max |diff| {o['max_abs_diff']:.2e}" if o.get("checked")
                 else f" ({o.get('reason')})")
        print(f"  model.onnx: {o['quantize_nodes']} QuantizeLinear / {o['dequantize_nodes']} "
              f"DequantizeLinear nodes{extra}")
        if o.get("checked") and not o.get("ok"):
            print(f"  warning: onnxruntime's predictions agree on only "
                  f"{100 * o['prediction_agreement']:.2f}% of the check inputs")
    elif o.get("status") == "skipped":
        print(f"  model.onnx skipped: {o['reason']}")
    for k, f in res.files.items():
        print(f"  {k}: {f}")
    return 0

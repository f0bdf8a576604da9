"""``evomp export``: a front member as deployable integer weights, checked before writing.

The integer format and its check live in :mod:`evomp.quant` (``INTEGER_FORMAT``,
``integer_arrays``, ``check_export``); this module picks the member, rebuilds its trained
fake-quant model, runs the check on real validation data and writes the files.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.quant import INTEGER_FORMAT, QuantModel, check_export, export_onnx, integer_arrays
from evomp.space import BitConfig

__all__ = ["ExportResult", "export_run", "select_member"]


# ------------------------------------------------------------------------ selection
def select_member(rows: Sequence[dict[str, Any]], pick: str | None = None,
                  best_under: str | None = None) -> dict[str, Any]:
    """The front row named by ``pick`` (an id such as ``p3``), or the most accurate one
    (validation accuracy after the final QAT; ties to the smaller metric) whose
    ``METRIC <= VALUE`` for ``best_under="METRIC=VALUE"``.

    Raises:
        EvompError: neither or both given, an unknown id or metric, or no member qualifies
            (naming the smallest value the front offers).
    """
    if (pick is None) == (best_under is None):
        raise EvompError("give exactly one of --pick ID or --best-under METRIC=VALUE")
    ids = [str(r["id"]) for r in rows]
    if pick is not None:
        for r in rows:
            if str(r["id"]) == pick:
                return dict(r)
        raise EvompError(f"no front member {pick!r}; the front has {ids}")
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=|<=)\s*([-+0-9.eE]+)\s*", best_under or "")
    if not m:
        raise EvompError(f"--best-under {best_under!r} is not METRIC=VALUE "
                         "(e.g. memory_bytes=10000)")
    metric, value = m.group(1), float(m.group(2))
    have = [k for k in (rows[0] if rows else {}) if k not in ("id", "genome_hash")]
    if rows and metric not in rows[0]:
        raise EvompError(f"front has no metric {metric!r}; it has {have}")
    ok = [r for r in rows if isinstance(r.get(metric), float) and r[metric] <= value]
    if not ok:
        vals = [r[metric] for r in rows if isinstance(r.get(metric), float)]
        low = f"; its smallest {metric} is {min(vals):.6g}" if vals else ""
        raise EvompError(f"no front member has {metric} <= {value:g}{low}")
    best = min(ok, key=lambda r: (-(r.get("val_accuracy") or 0.0), r[metric]))
    return dict(best)


# --------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_run` wrote."""

    out: Path
    member: str
    files: dict[str, Path]
    check: dict[str, Any]
    onnx: dict[str, Any] = field(default_factory=dict)


def _load_quant_model(run_dir: Path, member: dict[str, Any], layer_names: list[str],
                      model: nn.Module | None) -> QuantModel:
    if model is None:
        raise EvompError("internal: no model")  # pragma: no cover
    state_path = run_dir / member["model"]
    if not state_path.is_file():
        raise EvompError(f"{state_path} is missing: the member's trained state dict is needed "
                         "(re-run the same command to verify the front again)")
    qm = QuantModel(model, layer_names)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    try:
        qm.load_state_dict(state)
    except RuntimeError as e:
        raise EvompError(f"{state_path} does not fit the model: {e}") from e
    return qm.eval()


def _check_bits(qm: QuantModel, cfg: BitConfig) -> None:
    """The state dict's bit buffers must be the member's configuration."""
    for name, q in zip(qm.layer_names, qm.qlayers):
        if tuple(int(b) for b in q.w_bits.tolist()) != tuple(cfg.weights[name]) or \
                int(q.a_bits) != int(cfg.activations[name]):
            raise EvompError(f"the trained model's bits of layer {name!r} differ from "
                             "front.json: the run directory is inconsistent")


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    pick: str | None = None,
    best_under: str | None = None,
    model: nn.Module | None = None,
    task: Any | None = None,
    onnx: bool = True,
    force: bool = False,
    n_check: int = 512,
) -> ExportResult:
    """Export one verified front member of a run directory.

    Args:
        run_dir: a finished run (search or baseline).
        out: the export directory (created; must be empty unless ``force``).
        pick / best_under: which member (see :func:`select_member`).
        model: a fresh float model of the run's architecture; default: built from the
            run's ``spec.toml`` (needed for runs made from Python with one's own model).
        task: the run's task (real inputs for the check); default: from ``spec.toml``.
        onnx: also write ``model.onnx`` when the onnx package is installed.
        force: allow writing into a non-empty ``out``.
        n_check: validation inputs used by the check.

    Raises:
        EvompError: bad selection, a run made from Python without ``model``/``task``, or
            an export that does not reproduce the fake-quant model (nothing is written).
    """
    from evomp.run import RunDir

    rd = RunDir(run_dir)
    d = rd.path
    rows, members = rd.read_front()
    row = select_member(rows, pick, best_under)
    gid = str(row["id"])
    member = members[gid]
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not force:
        raise EvompError(f"{dest} is not empty; pick another --out (or --force to overwrite "
                         "the export files in it)")
    from evomp.run import build_task, checkpoint_key, load_spec
    from hwmodels import LayerTable

    spec = load_spec(rd.spec)
    user = str(checkpoint_key(rd.float_model) or "").startswith("user")
    if user and (model is None or task is None):
        raise EvompError(f"{d} was made from Python with one's own model: export it with "
                         "evomp.export_run(DIR, OUT, pick=..., model=YourModel(), task=task)")
    if task is None:
        task = build_task(spec)
    if model is None:
        model = task.model_factory()
    table = LayerTable.from_json(rd.space.read_text())
    names = [lay.name for lay in table.layers]
    cfg = BitConfig.from_dict(member["bits"])
    qm = _load_quant_model(d, member, names, model)
    _check_bits(qm, cfg)
    arrays = integer_arrays(qm)
    from evomp.tasks import batches

    xs = []
    for x, _ in batches(task.val, 256):
        xs.append(x)
        if sum(len(t) for t in xs) >= n_check:
            break
    inputs = torch.cat(xs)[:n_check]
    check = check_export(qm, arrays, inputs)
    if not check["ok"]:
        raise EvompError(
            "the integer rebuild does not reproduce the fake-quant model (worst layer "
            f"relative error {check['max_layer_rel_error']:.3g} > {check['layer_rtol']:g} or "
            f"prediction agreement {check['prediction_agreement']:.4f} < "
            f"{check['agreement_required']}); nothing was written")
    files = {
        "bits": dest / "bits.json",
        "weights": dest / "weights.npz",
        "state_dict": dest / "fakequant_state.pt",
        "manifest": dest / "manifest.json",
    }
    from evomp.run import atomic_write_bytes, atomic_write_text, writing

    with writing(dest):
        dest.mkdir(parents=True, exist_ok=True)
    atomic_write_text(files["bits"], json.dumps(cfg.to_dict(), indent=1))
    # numpy's stubs match a ** argument against savez's allow_pickle: bool as well; the
    # values are arrays and numpy scalars, none named allow_pickle
    buf = io.BytesIO()
    np.savez(buf, **cast(dict[str, Any], arrays))
    atomic_write_bytes(files["weights"], buf.getvalue())
    buf = io.BytesIO()
    torch.save(qm.state_dict(), buf)
    atomic_write_bytes(files["state_dict"], buf.getvalue())
    onnx_info: dict[str, Any] = {"status": "not requested"}
    if onnx:
        onnx_info = export_onnx(qm, arrays, inputs[:64], dest / "model.onnx")
        if onnx_info["status"] == "written":
            files["onnx"] = dest / "model.onnx"
    meta = rd.read_run_json()
    hw = {k: v for k, v in row.items() if k not in
          ("id", "val_accuracy", "test_accuracy", "ptq_accuracy", "genome_hash", "violation")}
    manifest = {
        "evomp_export": 1,
        "run_dir": str(d),
        "member": gid,
        "genome_hash": member.get("genome_hash"),
        "method": meta.get("method"),
        "spec": spec.name,
        "task": {"name": task.name, "model": task.model_name,
                 "model_kwargs": dict(spec.task.model_kwargs) if not user else None},
        "metrics": {k: row.get(k) for k in ("val_accuracy", "test_accuracy", "ptq_accuracy")},
        "hardware": hw,
        "layers": [
            {"name": n, "w_bits_channels": {str(b): int(c) for b, c in
                                            zip(*np.unique(cfg.weights[n], return_counts=True))},
             "a_bits": int(cfg.activations[n]),
             "precision_groups": {str(b): [int(i) for i in np.nonzero(
                 np.asarray(cfg.weights[n]) == b)[0]] for b in sorted(set(cfg.weights[n]))}}
            for n in names],
        "format": INTEGER_FORMAT,
        "check": check,
        "onnx": onnx_info,
        "files": {k: v.name for k, v in files.items() if k != "manifest"},
    }
    atomic_write_text(files["manifest"], json.dumps(manifest, indent=1))
    return ExportResult(dest, gid, files, check, onnx_info)

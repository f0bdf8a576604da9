"""Your own model through evomp's Python API: space, task, hardware models (a measured
table from a CSV among them), search, report and export.

    .venv/bin/python runs/own_model.py                 # about 3 minutes on 2 cores
    .venv/bin/python runs/own_model.py --tiny          # a smoke run (what CI runs)

Replace the three marked parts with yours: the model and its trained weights, the
DataLoaders, and the CSV of figures measured on your device.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import evomp
import hwmodels


# --- 1. your model ------------------------------------------------------------------
class SmallNet(nn.Module):
    """A small CNN for 8x8 digit images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))


# --- 2. your data ---------------------------------------------------------------------
def loaders(seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train / validation / test DataLoaders (scikit-learn's digits, shipped offline)."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    te, va, tr = perm[:300], perm[300:500], perm[500:]
    mk = lambda i, shuffle: DataLoader(TensorDataset(x[i], y[i]), batch_size=64,  # noqa: E731
                                       shuffle=shuffle)
    return mk(tr, True), mk(va, False), mk(te, False)


def train_float(model: nn.Module, train: DataLoader, epochs: int) -> None:
    """Your own training code; evomp starts from the trained float weights."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()


# --- 3. your measured figures ------------------------------------------------------------
def write_latency_table(space: evomp.SearchSpace, path: Path) -> Path:
    """A per-layer latency table in the format of your device measurements.

    Columns ``layer, a_bits, w_bits, latency_us``: one row per layer and bit pair, each the
    whole layer's figure with every channel at ``w_bits`` (see ``hwmodels.TableModel``).
    THE NUMBERS HERE ARE NOT MEASURED: this example fills the table from evomp's own GAP8
    model (``hwmodels`` "pulp") so that it runs anywhere. Write your device's numbers.
    """
    pulp = hwmodels.get("pulp", table=space.table)
    rows = []
    for a in space.a_bits:
        for w in [b for b in space.w_bits if b > 0]:
            g = space.uniform(w, a)[0]
            for r in pulp.breakdown(space.table, g):  # w_bits reads e.g. "8x32"
                rows.append({"layer": r["layer"], "a_bits": r["a_bits"],
                             "w_bits": int(r["w_bits"].split("x")[0]),
                             "latency_us": round(r["latency_cycles"] / 175.0, 3)})
    seen, unique = set(), []
    for r in rows:  # pinned layers repeat the same entry
        k = (r["layer"], r["a_bits"], r["w_bits"])
        if k not in seen:
            seen.add(k)
            unique.append(r)
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["layer", "a_bits", "w_bits", "latency_us"])
        wr.writeheader()
        wr.writerows(unique)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/own-model", help="run directory")
    ap.add_argument("--tiny", action="store_true", help="a smoke run in well under a minute")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    train, val, test = loaders()
    model = SmallNet()
    train_float(model, train, epochs=3 if args.tiny else 15)

    # the task: your model factory and DataLoaders (loss and metric default to
    # cross-entropy and top-1 accuracy)
    task = evomp.Task(name="digits-own", model_factory=SmallNet, train=train, val=val,
                      test=test, model_name="SmallNet")
    space = evomp.SearchSpace.from_model(model, task.example_input(), w_bits=(0, 2, 4, 8),
                                         a_bits=(4, 8), pin={"fc": [8, 8]})
    print(f"space: {len(space.layers)} layers, {space.n_genes} genes")
    table = write_latency_table(space, out / "latency.csv")

    spec = evomp.parse_spec({
        "name": "own-model",
        "qat": {"steps": 20 if args.tiny else 150, "final_steps": 40 if args.tiny else 500},
        "search": {
            "objectives": ["accuracy", "memory_bytes", "latency_us"],
            "hardware": ["memory", "table"],
            "budget": 8 if args.tiny else 24, "initial": 6 if args.tiny else 10,
            "per_round": 2 if args.tiny else 5, "generations": 5 if args.tiny else 30,
            "population": 16 if args.tiny else 48, "probes": 2 if args.tiny else 8,
            "final_max": 3 if args.tiny else 6,
        },
        "hw": {"table": {"path": str(table)}},
    })
    ctx = evomp.make_context(task, model, space, spec, out=out)
    front = evomp.Search(ctx, evomp.build_parts(ctx)).run()
    for r in front.rows:
        print(f"  {r['id']}: test {r['test_accuracy']:.4f}  memory {r['memory_bytes']:.0f} B  "
              f"latency {r['latency_us']:.1f} us (table)")

    rep = evomp.write_report(out)
    print(f"report: {rep.html}")
    best = max(front.rows, key=lambda r: (r["val_accuracy"], -r["memory_bytes"]))
    exp = evomp.export_run(out, out / "export", pick=str(best["id"]), model=SmallNet(),
                           task=task, force=True)
    print(f"exported {exp.member} to {exp.out} (check ok: {exp.check['ok']})")
    print(f"open the study: optuna-dashboard {out / 'study.journal'}")
    assert np.isfinite(best["test_accuracy"])


if __name__ == "__main__":
    main()

"""The cheap fidelities (issue 15): post-training accuracy with the BatchNorm statistics
re-estimated under the genome's bits, and a very short QAT of ``qat.tiny_steps``."""

from __future__ import annotations

import torch
from torch import nn

from evomp import Evaluator, QATConfig, SearchSpace
from evomp.evaluation import FIDELITIES
from evomp.quant import QuantModel
from evomp.tasks import Task, batches


def test_batchnorm_is_reestimated_on_the_quantized_outputs(
        trained: tuple[Task, nn.Module, SearchSpace]) -> None:
    task, m, space = trained
    q = QuantModel(m, space.layer_names)
    xs = [x for (x, _), _ in zip(batches(task.train, 64), range(3))]
    q.calibrate(xs)
    wb, ab = space.decode(space.uniform(2, 2))
    q.set_bits(wb[0], ab[0], space.table.layer_start)
    (bn,) = [mod for mod in q.modules() if isinstance(mod, nn.BatchNorm1d)]
    # what the BatchNorm sees: the quantized conv's outputs on the same batches
    seen: list[torch.Tensor] = []
    h = bn.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach()))
    q.eval()
    with torch.no_grad():
        for x in xs:
            q(x)
    h.remove()
    before = bn.running_mean.clone()
    assert q.reestimate_bn(xs) is True
    z = torch.cat(seen).transpose(0, 1).reshape(8, -1)
    # a cumulative average of the per-batch means (equal batch sizes: the overall mean)
    torch.testing.assert_close(bn.running_mean, z.mean(1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, bn.running_mean)
    assert bn.momentum == 0.1 and not q.training  # restored
    no_bn = QuantModel(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), ["1"])
    assert no_bn.reestimate_bn(xs) is False


def test_ptq_and_tiny_fidelities(trained: tuple[Task, nn.Module, SearchSpace]) -> None:
    task, m, space = trained
    assert FIDELITIES == ("ptq", "tiny", "short", "final")
    ev = Evaluator(task, space, m, QATConfig(steps=6, final_steps=8, tiny_steps=2,
                                             batch_size=32, final_from="float"))
    g = space.uniform(2, 2)
    ptq, tiny, short = (ev.evaluate(g, f)[0] for f in ("ptq", "tiny", "short"))
    # PTQ trains nothing: its accuracy is the post-training one every fidelity reports
    assert ptq.val_accuracy == ptq.ptq_accuracy == tiny.ptq_accuracy == short.ptq_accuracy
    assert ev.steps("tiny") == 2 and ev.steps("ptq") == 0
    # the tiny QAT is the first tiny_steps of training (same seed, same data order) ...
    ref = Evaluator(task, space, m, QATConfig(steps=2, final_steps=8, batch_size=32,
                                              final_from="float"))
    assert ref.evaluate(g, "short")[0].val_accuracy == tiny.val_accuracy
    # ... and the PTQ accuracy is measured after the BatchNorm re-estimation
    from evomp.tasks import evaluate_model

    ev.apply(g[0])
    _, plain = evaluate_model(ev.qmodel, task, task.val)
    # the evaluator's calibration batches (4 of 256, in order) are the re-estimation's
    ev.qmodel.reestimate_bn([x for (x, _), _ in zip(batches(task.train, 256), range(4))])
    acc, bn = evaluate_model(ev.qmodel, task, task.val)
    assert ptq.ptq_accuracy == acc and ptq.val_loss == bn != plain  # losses: exact

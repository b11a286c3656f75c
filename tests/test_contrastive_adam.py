"""Phase 1's optimiser (diffatr/contrastive/adam.py) against torch's own: the same bytes as
`torch.optim.Adam(fused=True)` with `StepLR`, step by step across a learning-rate decay, and no
dynamo import (the point of not using the torch.optim classes)."""

import os
import subprocess
import sys

import torch

from diffatr.contrastive.adam import FusedAdam, step_lr

LR, STEP, GAMMA = 1e-3, 2, 0.1


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def test_the_same_bytes_as_torch_fused_adam_with_step_lr() -> None:
    ours, theirs = model(), model()
    opt = FusedAdam(ours.parameters(), lr=LR)
    ref = torch.optim.Adam(theirs.parameters(), lr=LR, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(ref, STEP, GAMMA)
    g = torch.Generator().manual_seed(1)
    for epoch in range(1, 6):  # decays after epochs 2 and 4
        opt.lr = step_lr(LR, epoch, STEP, GAMMA)
        assert opt.lr == sched.get_last_lr()[0]  # the same float, not only close
        for _ in range(3):
            x = torch.randn(4, 7, generator=g)
            for net, o in ((ours, opt), (theirs, ref)):
                o.zero_grad()
                net(x).square().sum().backward()
                o.step()
            for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
                assert torch.equal(p, q)
        sched.step()
    assert step_lr(LR, 1, STEP, GAMMA) == LR and step_lr(LR, 3, STEP, GAMMA) == LR * GAMMA


def test_a_parameter_without_a_gradient_is_left_alone() -> None:
    net = model()
    opt = FusedAdam(net.parameters(), lr=LR)
    net(torch.randn(2, 7)).sum().backward()
    net[0].bias.grad = None
    before = net[0].bias.detach().clone()
    opt.step()
    assert torch.equal(net[0].bias, before) and opt.steps[1] is None
    assert not torch.equal(net[0].weight, model()[0].weight)  # the others moved


def test_phase_one_training_imports_no_dynamo(tmp_path) -> None:
    script = (
        "import sys, torch\n"
        "from diffatr.contrastive.adam import FusedAdam\n"
        "net = torch.nn.Linear(4, 2)\n"
        "opt = FusedAdam(net.parameters(), lr=1e-3)\n"
        "net(torch.randn(3, 4)).sum().backward()\n"
        "torch.nn.utils.clip_grad_norm_(list(net.parameters()), 1.0)\n"
        "opt.step()\n"
        "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "no dynamo", out.stderr

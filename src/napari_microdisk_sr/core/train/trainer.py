"""The optimisation itself: the network with its optimiser, learning-rate schedule, loss scaler and EMA.

:class:`Trainer` does one step on a batch, scores fixed validation pairs, and owns its state
(``state_dict()`` / ``load_state_dict()``) for the checkpoint. What a network's layer groups and frozen
blocks are comes from its adapter (:mod:`..archs`).
"""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..archs import LAYER_GROUPS, freeze_first_blocks, layer_groups
from ..device import cpu_has_native_bf16
from .config import FineTuneConfig
from .ddp import Ranks

__all__ = ["Trainer", "autocast_dtype", "cpu_copy"]

_PSNR_MSE_FLOOR = 1e-10  # a perfect patch scores 100 dB rather than infinity


def autocast_dtype(device: torch.device, amp: "bool | None") -> "torch.dtype | None":
    """The autocast dtype that training uses on ``device`` for the ``amp`` setting; None: float32.

    ``amp=None`` (automatic) means bfloat16 on CPUs with native bfloat16 and float32 elsewhere; ``amp=True``
    means bfloat16 on CUDA where supported (else float16, with a loss scaler) and on the CPU.
    """
    if device.type == "cuda":
        if not amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp or (amp is None and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


def cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU float copies of a state dict's tensors (as saved files hold them)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


class Trainer:
    """The network with its optimiser, schedule, loss scaler and EMA: one step, validation, and their state.

    Parameters
    ----------
    module : nn.Module
        The network, modified in place (frozen layers, device, channels-last memory format: faster on CUDA
        and a few percent faster on the CPU; see benchmarks/README.md).
    config : FineTuneConfig
    ranks : Ranks
        The processes training together (this one alone, or those of a torchrun launch: see :mod:`.ddp`)
        and this one's device.
    """

    def __init__(self, module: nn.Module, config: FineTuneConfig, ranks: Ranks) -> None:
        self.ranks = ranks
        self.device = device = ranks.device
        self.frozen = freeze_first_blocks(module, config.freeze_blocks)
        self.module = module.to(device=device, memory_format=torch.channels_last).train()
        self._network = ranks.wrap(self.module)  # what steps run: the module, or DDP around it
        self.optimizer = torch.optim.Adam(
            self._param_groups(config), lr=config.lr, betas=config.betas, fused=True
        )
        self.scheduler = StepLR(self.optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
        self.amp_dtype = autocast_dtype(device, config.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema
            else None
        )

    def _param_groups(self, config: FineTuneConfig) -> list[dict[str, Any]]:
        trainable = [(name, p) for name, p in self.module.named_parameters() if p.requires_grad]
        if config.layer_lrs is None:
            return [{"params": [p for _, p in trainable], "lr": config.lr, "name": "all"}]
        groups = layer_groups(self.module)
        out = []
        for group, lr in zip(LAYER_GROUPS, config.layer_lrs, strict=True):
            params = [p for name, p in trainable if groups[name] == group]
            if params:
                out.append({"params": params, "lr": lr, "name": group})
        return out

    @property
    def net(self) -> nn.Module:
        """The network that is validated and saved: the EMA when enabled."""
        return self.module if self.ema is None else self.ema.module

    @property
    def lr(self) -> float:
        """The current learning rate of the body (of the only group without layer-wise rates)."""
        groups = self.optimizer.param_groups
        return float(next((g["lr"] for g in groups if g["name"] == "body"), groups[0]["lr"]))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, lq: torch.Tensor, gt: torch.Tensor, *, pairs: "int | None" = None) -> torch.Tensor:
        """One optimisation step on a batch; returns the batch's L1 loss, detached, on the device.

        Parameters
        ----------
        lq : (B, C, h, w) float32 Tensor
            The low-resolution inputs: with several processes, this process's part of the step's batch
            (``B`` may be 0).
        gt : (B, C, h * scale, w * scale) float32 Tensor
            The high-resolution targets.
        pairs : int, optional
            The pairs of the step's whole batch, over all the processes; ``B`` by default.

        Returns
        -------
        Tensor
            The mean L1 of the whole batch (the same on every process).
        """
        pairs, weight = len(gt) if pairs is None else pairs, 1.0
        if not len(gt):  # this process's part is empty: a zero pair of zero weight takes it through the step
            lq, gt, weight = lq.new_zeros(1, *lq.shape[1:]), gt.new_zeros(1, *gt.shape[1:]), 0.0
        lq = lq.to(self.device).contiguous(memory_format=torch.channels_last)
        gt = gt.to(self.device)
        with self._autocast():
            sr = self._network(lq)
        if self.ranks.size == 1:
            loss = objective = F.l1_loss(sr.float(), gt)
        else:  # the share of the batch's mean L1; DDP averages the gradients, whose sum is the batch's
            loss = (sr.float() - gt).abs().sum() * (weight / (pairs * gt[0].numel()))
            objective = loss * self.ranks.size
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        return self.ranks.sum(loss.detach())

    @torch.no_grad()
    def validate(self, lq: torch.Tensor, gt: torch.Tensor, batch_size: int) -> tuple[float, float]:
        """Mean L1 and mean per-patch PSNR (dB, output clipped to [0, 1]) of :attr:`net` on fixed pairs.

        Parameters
        ----------
        lq : (N, C, h, w) float32 Tensor
        gt : (N, C, h * scale, w * scale) float32 Tensor
        batch_size : int
        """
        part = self.ranks.part(len(gt))  # with several processes: each scores its part, then they add up
        lq, gt_part = lq[part], gt[part]
        net = self.net.eval()
        sums = torch.zeros(2, device=self.device)  # L1, PSNR
        for start in range(0, len(lq), batch_size):
            end = start + batch_size
            lq_batch = lq[start:end].to(self.device).contiguous(memory_format=torch.channels_last)
            gt_batch = gt_part[start:end].to(self.device)
            with self._autocast():
                sr = net(lq_batch).float()
            mse = (sr.clamp(0.0, 1.0) - gt_batch).square().mean(dim=(1, 2, 3)).clamp_min(_PSNR_MSE_FLOOR)
            sums += torch.stack([(sr - gt_batch).abs().sum(), (-10.0 * torch.log10(mse)).sum()])
        net.train()
        l1, psnr = self.ranks.sum(sums).tolist()
        return l1 / gt.numel(), psnr / len(gt)

    def weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of the weights that get saved (the EMA when enabled)."""
        return cpu_copy(self.net.state_dict())

    def weights_finite(self) -> bool:
        """Whether every trained weight is finite (one device synchronisation)."""
        return bool(torch.stack([p.isfinite().all() for p in self.module.parameters()]).all())

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

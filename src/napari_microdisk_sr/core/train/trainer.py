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
    device : torch.device
    """

    def __init__(self, module: nn.Module, config: FineTuneConfig, device: torch.device) -> None:
        self.device = device
        self.frozen = freeze_first_blocks(module, config.freeze_blocks)
        self.module = module.to(device=device, memory_format=torch.channels_last).train()
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

    def step(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; returns the batch's L1 loss, detached, on the device.

        Parameters
        ----------
        lq : (B, C, h, w) float32 Tensor
            The low-resolution inputs.
        gt : (B, C, h * scale, w * scale) float32 Tensor
            The high-resolution targets.
        """
        lq = lq.to(self.device).contiguous(memory_format=torch.channels_last)
        gt = gt.to(self.device)
        with self._autocast():
            sr = self.module(lq)
        loss = F.l1_loss(sr.float(), gt)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        return loss.detach()

    @torch.no_grad()
    def validate(self, lq: torch.Tensor, gt: torch.Tensor, batch_size: int) -> tuple[float, float]:
        """Mean L1 and mean per-patch PSNR (dB, output clipped to [0, 1]) of :attr:`net` on fixed pairs.

        Parameters
        ----------
        lq : (N, C, h, w) float32 Tensor
        gt : (N, C, h * scale, w * scale) float32 Tensor
        batch_size : int
        """
        net = self.net.eval()
        l1 = torch.zeros((), device=self.device)
        psnr = torch.zeros((), device=self.device)
        for start in range(0, len(lq), batch_size):
            end = start + batch_size
            lq_batch = lq[start:end].to(self.device).contiguous(memory_format=torch.channels_last)
            gt_batch = gt[start:end].to(self.device)
            with self._autocast():
                sr = net(lq_batch).float()
            l1 += (sr - gt_batch).abs().sum()
            mse = (sr.clamp(0.0, 1.0) - gt_batch).square().mean(dim=(1, 2, 3)).clamp_min(_PSNR_MSE_FLOOR)
            psnr += (-10.0 * torch.log10(mse)).sum()
        net.train()
        return l1.item() / gt.numel(), psnr.item() / len(gt)

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

"""Small helpers around ``torch.distributed`` for runs launched by ``torchrun``.

Every helper also works without a process group (a plain ``python -m vireid …`` run): rank 0
of a world of size 1, barriers are no-ops and gathers return ``[obj]``. So library code can
call them unconditionally and behave identically in one process.

``torchrun`` exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them and joins the group with the ``env://``
rendezvous. The backend is ``nccl`` when CUDA is used, ``gloo`` otherwise (the only choice
on CPU); ``VIREID_DIST_BACKEND`` overrides it.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vireid.errors import ConfigError, TrainingError, VireidError
from vireid.utils.atomic import OutputWriteError, describe_os_error
from vireid.utils.runtime import set_cpu_threads

log = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int
    backend: Optional[str]  # None when no process group was created (world_size 1)
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}: expected an integer, found {text!r}") from None


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    return _env_int("WORLD_SIZE", 1)


def local_world_size() -> int:
    """Processes on this node (``LOCAL_WORLD_SIZE`` as set by torchrun; 1 when unset)."""
    return _env_int("LOCAL_WORLD_SIZE", 1)


def init_from_env(backend: Optional[str] = None, device: str = "auto",
                  timeout_s: float = 1800.0, threads_per_rank: Optional[int] = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None (nccl when the run uses CUDA, else gloo;
            the environment variable ``VIREID_DIST_BACKEND`` wins over the automatic choice).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        timeout_s: how long collectives wait for slow ranks before failing.
        threads_per_rank: CPU threads of torch and numba in each rank. None = the node's
            cores divided by ``LOCAL_WORLD_SIZE`` when ``WORLD_SIZE`` > 1 (ranks on one node
            share its cores: more threads than cores makes every rank slower), else left as is.

    Returns:
        DistInfo; with ``WORLD_SIZE`` unset or 1 no process group is created.

    Raises:
        ConfigError: bad environment values, an unknown backend, or nccl without CUDA.
    """
    world = env_world_size()
    rank_ = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank_ < world:
        raise ConfigError(f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, found "
                          f"RANK={rank_}, WORLD_SIZE={world}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available")
    dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1)) if use_cuda \
        else torch.device("cpu")
    if use_cuda:
        # Each rank owns one GPU; NCCL collectives run on the "current" device.
        torch.cuda.set_device(dev)
    if threads_per_rank is not None:
        set_cpu_threads(threads_per_rank)
    elif world > 1:
        set_cpu_threads((os.cpu_count() or 1) // max(1, local_world_size()))
    if world == 1:
        return DistInfo(0, 1, local, None, dev)
    backend = backend or os.environ.get("VIREID_DIST_BACKEND") or ("nccl" if use_cuda else "gloo")
    if backend not in BACKENDS:
        raise ConfigError(f"distributed backend: expected one of {', '.join(BACKENDS)}, found {backend!r}")
    if backend == "nccl" and not use_cuda:
        raise ConfigError("distributed backend nccl needs CUDA; use gloo on CPU")
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(var):
                raise ConfigError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun "
                                  f"(it sets MASTER_ADDR/MASTER_PORT), or export them")
        dist.init_process_group(backend=backend, init_method="env://", rank=rank_, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        log.info("joined process group: rank %d of %d (local rank %d, backend %s)",
                 rank_, world, local, backend)
    return DistInfo(rank_, world, local, backend, dev)


def is_initialized() -> bool:
    """True when a process group exists (a torchrun run with WORLD_SIZE > 1)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 when unset)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on the process that writes files and logs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def collective_device() -> torch.device:
    """Device that tensors must live on for this group's collectives (nccl: the current GPU)."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_bounds(n: int, parts: int, part: int, align: int = 1) -> tuple[int, int]:
    """Contiguous slice ``[lo, hi)`` of ``range(n)`` owned by ``part`` of ``parts``.

    Blocks of ``align`` items are dealt out whole (the first ``n_blocks % parts`` parts get
    one block more), so that a split at chunk boundaries keeps every chunk identical to the
    one-process computation. The slices of all parts are disjoint and cover ``range(n)``.
    """
    if parts < 1 or not 0 <= part < parts or align < 1 or n < 0:
        raise ValueError(f"shard_bounds: bad arguments n={n}, parts={parts}, part={part}, align={align}")
    blocks = -(-n // align)
    base, extra = divmod(blocks, parts)
    lo_block = part * base + min(part, extra)
    hi_block = lo_block + base + (1 if part < extra else 0)
    return min(lo_block * align, n), min(hi_block * align, n)


def cleanup() -> None:
    """Leave the process group, if any (call once at the end of a torchrun run)."""
    if is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- training across ranks
class RankZeroIO:
    """Runs file writes on rank 0 only, and stops every rank when one of them fails.

    ``run(fn, what)`` calls ``fn`` on rank 0; an OSError becomes :class:`OutputWriteError`
    naming ``what``. Then (all ranks) the outcome is broadcast from rank 0: rank 0 re-raises
    its error, the other ranks raise :class:`TrainingError` quoting it, instead of waiting in
    the next collective until the timeout. Without a process group it is a plain call.
    """

    def __init__(self, main: bool, world: int) -> None:
        self.main, self.world = main, world

    def run(self, fn: Callable[[], Any], what: str) -> Any:
        err: Optional[VireidError] = None
        out = None
        if self.main:
            try:
                out = fn()
            except VireidError as exc:
                err = exc
            except OSError as exc:
                err = OutputWriteError(f"cannot write {what}: {describe_os_error(exc)}")
                err.__cause__ = exc
        if self.world > 1:
            msg = broadcast_object(None if err is None else str(err), src=0)
            if err is None and msg is not None:
                raise TrainingError(f"stopped: rank 0 failed: {msg}")
        if err is not None:
            raise err
        return out


class AllReduceSum(torch.autograd.Function):
    """Sum of a tensor over all ranks, differentiable: the gradient of every rank's input is
    the sum of the ranks' output gradients (each rank's output feeds its own loss)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        g = g.clone()
        dist.all_reduce(g)
        return g


class DistBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of all ranks.

    ``torch.nn.SyncBatchNorm`` only runs on GPUs; this one works with any backend (gloo on
    the CPU): the per-channel sums and counts, then the centred sums of squares, are summed
    over the ranks by differentiable all-reduces, so the output, its gradients and the running statistics equal
    those of one process holding the whole batch (to float rounding). Outside training or
    without a process group it is a plain BatchNorm. Its state-dict keys are those of
    ``nn.BatchNorm2d``: checkpoints load into plain models.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"DistBatchNorm: expected (B, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        # Two passes (sum, then centred sum of squares), as accurate as F.batch_norm; the
        # one-pass E[x²] − E[x]² drifted the running variances by ~5e-5 relative.
        tot = AllReduceSum.apply(torch.cat([x.sum(dims), count]))  # (C + 1,)
        n = tot[-1].detach()
        mean = tot[:-1] / n
        xc = x - mean.view(shape)
        var = AllReduceSum.apply((xc * xc).sum(dims)) / n  # biased: what BN normalises with
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1).clamp(min=1),
                                                         alpha=momentum)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised across ranks: ``nn.SyncBatchNorm`` on
    CUDA, :class:`DistBatchNorm` otherwise (parameters and buffers are kept, not copied)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, DistBatchNorm):
        new = DistBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module

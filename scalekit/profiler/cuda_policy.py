"""CUDA autocast's cast policy, installed on the CPU autocast key while a step is predicted on CPU.

CPU and CUDA autocast cast different ops. For a MedNeXt step the differences that change memory are:
CUDA runs ``group_norm``, ``softmax``, ``log_softmax``, ``sum``, ``linalg_vector_norm``, ``pow`` and ``rsqrt``
in float32 (CPU keeps the low precision), and CUDA decomposes ``cross_entropy`` into a float32
``log_softmax`` + ``nll_loss`` where CPU casts the logits to a float32 copy first. Convolutions and transposed
convolutions run in the low precision on both, and both cache the casts of parameters.

:func:`cuda_autocast_policy` registers Python kernels for these ops on the ``AutocastCPU`` dispatch key for
the duration of a ``with`` block (and removes them afterwards), so that ``torch.autocast("cpu", dtype)`` then
casts like ``torch.autocast("cuda", dtype)`` for every op a MedNeXt step uses. Ops outside the tables below keep
CPU autocast's policy. The registration is process-wide while it lasts: do not run other CPU autocast code in
parallel threads.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch._C import DispatchKey, DispatchKeySet, _ExcludeDispatchKeyGuard

aten = torch.ops.aten
LOW_PRECISION = (torch.float16, torch.bfloat16)

CUDA_FP32 = ("group_norm", "layer_norm", "native_layer_norm", "rsqrt", "exp", "log", "reciprocal",
             "pow.Tensor_Scalar", "pow.Tensor_Tensor", "mse_loss", "l1_loss")
"""Ops whose floating inputs CUDA autocast casts to float32 (``fp32`` policy)."""
CUDA_FP32_OUTPUT_DTYPE = {
    "softmax.int": 2, "log_softmax.int": 2, "sum": 1, "sum.dim_IntList": 3,
    "linalg_vector_norm": 4, "cumsum": 2, "prod": 1,
}
"""Ops CUDA autocast runs with ``dtype=float32`` (``fp32_set_opt_dtype``), with the position of ``dtype``."""
CPU_ONLY = ("cross_entropy_loss",)
"""Ops CPU autocast casts but CUDA autocast lets decompose into the ops above."""


def _below_autocast(op: Any, args: tuple, kwargs: dict) -> Any:
    with _ExcludeDispatchKeyGuard(DispatchKeySet(DispatchKey.AutocastCPU)):
        return op(*args, **kwargs)


def _fp32_kernel(op: Any) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        cast = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in LOW_PRECISION else a for a in args)
        return _below_autocast(op, cast, kwargs)

    return kernel


def _fp32_output_kernel(op: Any, dtype_position: int) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        x = args[0]
        given = args[dtype_position] if len(args) > dtype_position else kwargs.get("dtype")
        if isinstance(x, torch.Tensor) and x.dtype in LOW_PRECISION and given is None:
            if len(args) > dtype_position:
                args = (*args[:dtype_position], torch.float32, *args[dtype_position + 1:])
            else:
                kwargs = {**kwargs, "dtype": torch.float32}
        return _below_autocast(op, args, kwargs)

    return kernel


def _op(name: str) -> Any:
    base, _, overload = name.partition(".")
    return getattr(getattr(aten, base), overload or "default")


@contextlib.contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """Within the block, CPU autocast follows CUDA autocast's cast policy for the ops of a MedNeXt step."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
            warnings.filterwarnings("ignore", message=".*[Ww]arning only once.*")
            for name in CUDA_FP32:
                lib.impl(name, _fp32_kernel(_op(name)), "AutocastCPU")
            for name, position in CUDA_FP32_OUTPUT_DTYPE.items():
                lib.impl(name, _fp32_output_kernel(_op(name), position), "AutocastCPU")
            for name in CPU_ONLY:
                lib.impl(name, torch.library.fallthrough_kernel, "AutocastCPU")
        yield
    finally:
        lib._destroy()

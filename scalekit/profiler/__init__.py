"""Parameters, FLOPs and peak GPU memory of a network's training step, measured on CUDA or predicted on CPU.

``profile(arch, patch_size, batch_size, amp="fp16", checkpointing=None, device="auto")`` returns a
:class:`ProfileResult` for the config of any registered network kind (:mod:`scalekit.networks`; MedNeXt's
figures below). Counting (parameters, MACs, fvcore-style and training FLOPs) runs on the ``meta``
device (:mod:`.counting`). Memory is measured when a CUDA GPU is used (:mod:`.measure`) and predicted otherwise
(:mod:`.predict`). Results are cached as JSON (:mod:`.cache`).

The training step (:mod:`.step`) is the reference recipe: forward with deep supervision and the soft Dice +
cross-entropy loss (weights 16:8:4:2:1 / 31), backward, clipping at 12, AdamW (foreach) with its state as in
steady training, GradScaler under fp16 (a stand-in with the same memory behaviour when predicting).

What the prediction assumes (checked by ``benchmarks/profile_accuracy.py`` on a GPU):

* Memory is what the tensors of the step occupy: the fake-tensor run sees every storage an aten op creates,
  not scratch memory inside kernels. On CUDA the only large kernel-internal allocation is cuDNN's workspace,
  covered by a fixed allowance (``CUDNN_WORKSPACE_BYTES`` = 64 MiB) that is an assumption, not a measurement.
* CUDA kernels return the same outputs and save the same tensors for backward as the CPU/meta kernels that the
  fake run uses (true for convolution, group norm, GELU, softmax and the losses used here).
* Under AMP, CUDA autocast's cast policy is imposed on CPU autocast for the ops the step uses
  (:mod:`.cuda_policy`): low precision for convolutions, float32 for group norm, softmax, log-softmax, sums and
  norms, and the parameter-cast cache of autocast.
* The caching allocator is modelled (:mod:`.allocator`): 512 B rounding, 2 MiB small segments, 20 MiB or
  2 MiB-rounded large segments, best fit, no ``empty_cache``, default ``PYTORCH_CUDA_ALLOC_CONF``, memory
  ample enough that the allocator never frees cached segments to retry.
* The CUDA context is a constant (``CUDA_CONTEXT_BYTES`` = 512 MiB), reported apart from the peak.
"""

from .api import profile
from .result import ProfileResult

__all__ = ["ProfileResult", "profile"]

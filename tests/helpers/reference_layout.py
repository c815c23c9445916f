"""Reference MedNeXt state-dict layout written out from the specification (mednext-v1.md, section 7).

Independent of scalekit's modules: it enumerates key names and shapes as the reference code produces them, so
that a test can check that such a state dict loads into scalekit's MedNeXt with strict checking.
"""

from __future__ import annotations

import torch


def _block(prefix: str, cin: int, cout: int, r: int, k: int, dim: int, res: str | None) -> dict[str, tuple]:
    one = (1,) * dim
    shapes = {
        f"{prefix}.conv1.weight": (cin, 1) + (k,) * dim,
        f"{prefix}.conv1.bias": (cin,),
        f"{prefix}.norm.weight": (cin,),
        f"{prefix}.norm.bias": (cin,),
        f"{prefix}.conv2.weight": (r * cin, cin) + one,
        f"{prefix}.conv2.bias": (r * cin,),
        f"{prefix}.conv3.weight": (cout, r * cin) + one,
        f"{prefix}.conv3.bias": (cout,),
    }
    if res == "down":
        shapes[f"{prefix}.res_conv.weight"] = (cout, cin) + one
        shapes[f"{prefix}.res_conv.bias"] = (cout,)
    elif res == "up":  # transposed-conv layout (in, out, ...)
        shapes[f"{prefix}.res_conv.weight"] = (cin, cout) + one
        shapes[f"{prefix}.res_conv.bias"] = (cout,)
    return shapes


def reference_shapes(
    n_channels: int = 32,
    in_channels: int = 1,
    num_classes: int = 14,
    exp_r: tuple[int, ...] = (2,) * 9,
    block_counts: tuple[int, ...] = (2,) * 9,
    kernel_size: int = 3,
    deep_supervision: bool = True,
    dim: int = 3,
) -> dict[str, tuple]:
    """Key -> shape of a reference ``mednextv1.MedNeXt`` state dict (do_res_up_down=True, group norm)."""
    one = (1,) * dim
    ch = [n_channels * 2**i for i in range(5)]
    shapes: dict[str, tuple] = {"dummy_tensor": (1,), "stem.weight": (n_channels, in_channels) + one,
                                "stem.bias": (n_channels,)}
    for lvl in range(4):
        for n in range(block_counts[lvl]):
            shapes |= _block(f"enc_block_{lvl}.{n}", ch[lvl], ch[lvl], exp_r[lvl], kernel_size, dim, None)
        shapes |= _block(f"down_{lvl}", ch[lvl], ch[lvl + 1], exp_r[lvl + 1], kernel_size, dim, "down")
    for n in range(block_counts[4]):
        shapes |= _block(f"bottleneck.{n}", ch[4], ch[4], exp_r[4], kernel_size, dim, None)
    for lvl in reversed(range(4)):
        idx = 8 - lvl
        shapes |= _block(f"up_{lvl}", ch[lvl + 1], ch[lvl], exp_r[idx], kernel_size, dim, "up")
        for n in range(block_counts[idx]):
            shapes |= _block(f"dec_block_{lvl}.{n}", ch[lvl], ch[lvl], exp_r[idx], kernel_size, dim, None)
    for lvl in range(5 if deep_supervision else 1):
        shapes[f"out_{lvl}.conv_out.weight"] = (ch[lvl], num_classes) + one
        shapes[f"out_{lvl}.conv_out.bias"] = (num_classes,)
    return shapes


def random_reference_state(seed: int = 0, prefix: str = "", **kwargs) -> dict[str, torch.Tensor]:
    """A reference-layout state dict with random values (keys optionally prefixed, e.g. ``module.``)."""
    gen = torch.Generator().manual_seed(seed)
    return {prefix + k: torch.randn(shape, generator=gen) for k, shape in reference_shapes(**kwargs).items()}

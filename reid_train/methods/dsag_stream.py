"""DSA-reID's densely semantically aligned guiding stream (DSAG-Stream; Zhang et al.,
"Densely Semantically Aligned Person Re-Identification", CVPR 2019, Sec. 3.2.1, Table 1).

Input: the 24 DSAP-images (B, 24, 3, S, S) (S = 32, Sec. 3.1). Architecture
(Table 1, ResNet-18-style layers, each conv followed by BN; blocks are
two-conv residual blocks):

==========  =====================================  ==========  =========
layer       parameters                             output      branches
==========  =====================================  ==========  =========
conv1       5x5, 32                                32 x 32     24
conv2       3x3, 64                                32 x 32     24
conv3_x     [3x3, 64; 3x3, 64] x 2, stride 2       16 x 16     24
merging     element-wise add (left/right pairs)    16 x 16     24 -> 13
conv4_x     [3x3, 128; 3x3, 128] x 2, stride 2     8 x 8       13
merging     element-wise add (front/back halves)   8 x 8       13 -> 8
conv5_g     [3x3, 2048; 3x3, 2048] x 2 on D, GAP   d_G 2048    1
conv5_l     [3x3, 256; 3x3, 256] x 2, GAP          d_L,i 256   8
==========  =====================================  ==========  =========

``D = [D_1 .. D_8]`` is the channel concatenation of the 8 merged branches;
``d_G = P(H(D))`` (Eq. 1) and ``d_L,i = P(F(D_i))`` (Eq. 2), ``d_L`` their
concatenation. The two merges use the tables of :mod:`priors.dsap`
(:data:`~priors.dsap.MERGE_LEVEL1`, :data:`~priors.dsap.MERGE_LEVEL2`).

Implementation: the independent branches are **grouped convolutions** — the
24 DSAP-images are stacked along channels (part ``p`` owns channels
``[3p, 3p+3)``) and every conv of the MB-Ns uses ``groups = branches``, which
is exactly one separate conv per branch (same parameters, one kernel call).
A merge is the 0/1 matrix of :func:`priors.dsap.merge_matrix` applied to the
(B, branches, C, H, W) view. Every channel width is a parameter (tests shrink
them); the defaults are Table 1's. The head widths must equal the MF-Stream's
feature sizes for the element-wise fusion, so :class:`reid_train.methods.dsa.DSA`
passes them in.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from priors.dsap import MERGE_LEVEL1, MERGE_LEVEL2, merge_matrix

N_DSAP = 24
TABLE1_WIDTHS = (32, 64, 64, 128)  # conv1, conv2, conv3_x, conv4_x per branch
TABLE1_GLOBAL = 2048               # conv5_g
TABLE1_LOCAL = 256                 # conv5_l per merged part


def conv_bn_relu(c_in: int, c_out: int, k: int, groups: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class GroupedBasicBlock(nn.Module):
    """ResNet-18 basic block (two 3x3 convs + shortcut) run on ``groups``
    independent branches at once. ``c_in`` / ``c_out`` are totals over the
    branches; a 1x1 projection shortcut is used when the stride or width changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, groups: int = 1):
        super().__init__()
        if c_in % groups or c_out % groups:
            raise ValueError(f"channels {c_in}->{c_out} not divisible by {groups} branches")
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, groups=groups, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def grouped_stage(c_in: int, c_out: int, blocks: int, stride: int, groups: int) -> nn.Sequential:
    """``blocks`` basic blocks, the first one strided (Table 1's ``[...] x blocks``)."""
    layers = [GroupedBasicBlock(c_in, c_out, stride, groups)]
    layers += [GroupedBasicBlock(c_out, c_out, 1, groups) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class MergeBranches(nn.Module):
    """Element-wise addition of branch groups (Sec. 3.2.1 "two levels of merging").

    ``groups[g]`` lists the input branches summed into output branch ``g``.
    Input (B, n_in * C, H, W) with branch-major channels; output (B, n_out * C, H, W)."""

    def __init__(self, groups: Sequence[Sequence[int]], n_inputs: int):
        super().__init__()
        self.register_buffer("matrix", torch.from_numpy(merge_matrix(groups, n_inputs)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_out, n_in = self.matrix.shape
        B, C, H, W = x.shape
        y = torch.einsum("og,bgchw->bochw", self.matrix.to(x.dtype), x.reshape(B, n_in, C // n_in, H, W))
        return y.reshape(B, n_out * (C // n_in), H, W)

    def extra_repr(self) -> str:
        return f"{self.matrix.shape[1]} -> {self.matrix.shape[0]}"


class DSAGStream(nn.Module):
    """MB-Ns + head of Table 1: DSAP-images (B, 24, 3, S, S) -> ``(d_G, d_L)``.

    Args:
        widths: per-branch widths of conv1, conv2, conv3_x, conv4_x (Table 1: 32, 64, 64, 128).
        global_dim: conv5_g width = size of ``d_G`` (2048).
        local_dim: conv5_l width per merged part = size of each ``d_L,i`` (256).
        blocks: residual blocks in conv3_x, conv4_x, conv5_g and conv5_l (2 each).
        merge1, merge2: the 24 -> 13 and 13 -> 8 merge tables (:mod:`priors.dsap`).

    Spatial size: S -> S/2 (conv3.1) -> S/4 (conv4.1); 32 -> 16 -> 8.
    """

    def __init__(self, widths: Sequence[int] = TABLE1_WIDTHS, global_dim: int = TABLE1_GLOBAL,
                 local_dim: int = TABLE1_LOCAL, blocks: int = 2,
                 merge1: Sequence[Sequence[int]] = MERGE_LEVEL1, merge2: Sequence[Sequence[int]] = MERGE_LEVEL2):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths needs 4 entries (conv1, conv2, conv3_x, conv4_x), got {widths}")
        w1, w2, w3, w4 = (int(w) for w in widths)
        n0, n1, n2 = N_DSAP, len(merge1), len(merge2)
        self.widths, self.global_dim, self.local_dim, self.n_parts = (w1, w2, w3, w4), global_dim, local_dim, n2
        self.conv1 = conv_bn_relu(3 * n0, w1 * n0, 5, groups=n0)
        self.conv2 = conv_bn_relu(w1 * n0, w2 * n0, 3, groups=n0)
        self.conv3_x = grouped_stage(w2 * n0, w3 * n0, blocks, stride=2, groups=n0)
        self.merge1 = MergeBranches(merge1, n0)
        self.conv4_x = grouped_stage(w3 * n1, w4 * n1, blocks, stride=2, groups=n1)
        self.merge2 = MergeBranches(merge2, n1)
        self.conv5_g = grouped_stage(w4 * n2, global_dim, blocks, stride=1, groups=1)
        self.conv5_l = grouped_stage(w4 * n2, local_dim * n2, blocks, stride=1, groups=n2)
        for m in self.modules():  # from scratch (Sec. 4.2), He init as ResNet
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def merged_maps(self, dsap: torch.Tensor) -> torch.Tensor:
        """The MB-Ns: ``D`` (B, 8 * widths[3], S/4, S/4), part-major channels."""
        if dsap.dim() != 5 or dsap.shape[1:3] != (N_DSAP, 3):
            raise ValueError(f"dsap must be (B, 24, 3, S, S), got {tuple(dsap.shape)}")
        x = dsap.flatten(1, 2)                       # (B, 72, S, S): part p owns channels 3p..3p+2
        x = self.conv3_x(self.conv2(self.conv1(x)))
        return self.merge2(self.conv4_x(self.merge1(x)))

    def forward(self, dsap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d_G (B, global_dim), d_L (B, 8 * local_dim))``, Eq. 1-2."""
        D = self.merged_maps(dsap)
        d_G = self.conv5_g(D).mean(dim=(2, 3))
        d_L = self.conv5_l(D).mean(dim=(2, 3))       # channel group i = d_L,i
        return d_G, d_L


__all__ = ["DSAGStream", "GroupedBasicBlock", "MergeBranches", "grouped_stage", "TABLE1_WIDTHS",
           "TABLE1_GLOBAL", "TABLE1_LOCAL"]

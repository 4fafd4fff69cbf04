"""Backbones: a small CPU-friendly ResNet-style CNN (default) and torchvision's ResNet-18/34/50 when installed.

All map grey images ``(N, 1, S, S)`` (float, standardised) to embeddings ``(N, embedding_size)`` (not normalised).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual connection (1×1 conv shortcut when shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class SmallResNet(nn.Module):
    """Stem (3×3 conv, stride 2) then one basic block per width, each halving the resolution after the first,
    global average pooling, dropout, a linear layer to ``embedding_size`` and BatchNorm1d (as ArcFace's "BN-FC-BN"
    embedding head). Default widths (16, 32, 64, 128): 0.32 M parameters."""

    def __init__(
        self, embedding_size: int = 128, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(cin, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


class _TorchvisionResNet(nn.Module):
    """torchvision ResNet with a 1-channel input (the grey image repeated to RGB) and an embedding head."""

    def __init__(self, name: str, embedding_size: int) -> None:
        super().__init__()
        import torchvision  # optional: only for --backbone resnet*

        net = getattr(torchvision.models, name)(weights=None)
        net.fc = nn.Sequential(nn.Linear(net.fc.in_features, embedding_size), nn.BatchNorm1d(embedding_size))
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.expand(-1, 3, -1, -1))


BACKBONES = ("small", "resnet18", "resnet34", "resnet50")


def make_backbone(name: str, embedding_size: int = 128) -> nn.Module:
    """``"small"`` → :class:`SmallResNet`; ``"resnet18" | "resnet34" | "resnet50"`` → torchvision (randomly
    initialised, needs ``pip install torchvision``; meant for a GPU)."""
    if name == "small":
        return SmallResNet(embedding_size)
    if name in BACKBONES:
        try:
            return _TorchvisionResNet(name, embedding_size)
        except ImportError as e:
            raise SystemExit(f"--backbone {name} needs torchvision (pip install torchvision)") from e
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")

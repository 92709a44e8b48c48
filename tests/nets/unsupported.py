"""Models with an op no IR primitive covers, or more than one output, for the importer's
refusals (`autonl import tests/nets/unsupported.py:with_conv1d ...`)."""
import torch
from torch import nn


class WithConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mixer = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.mixer(self.stem(x).flatten(2)).mean(2)


class Warp(nn.Module):
    def forward(self, x):
        grid = torch.zeros(x.shape[0], x.shape[2], x.shape[3], 2)
        return nn.functional.grid_sample(x, grid, align_corners=False)


class WithGridSample(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.warp = Warp()

    def forward(self, x):
        return self.warp(self.stem(x)).mean((2, 3))


class TwoOutputs(nn.Module):
    """Logits and features, as detection-style backbones return them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        features = self.conv(x)
        return self.fc(features.mean((2, 3))), features


def with_conv1d():
    return WithConv1d()


def with_grid_sample():
    return WithGridSample()


def two_outputs():
    return TwoOutputs()

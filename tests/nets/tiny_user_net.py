"""A user's own small MobileNet-style network (4 classes, plain nn.Module) for `autonl run SOURCE`."""
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride, e):
        super().__init__()
        hid = cin * e
        self.res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class TinyNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)),
            Block(8, 8, 1, 2), Block(8, 16, 2, 3), Block(16, 16, 1, 3), Block(16, 24, 2, 3),
            nn.Sequential(nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True)))
        self.classifier = nn.Linear(64, classes)

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        return self.classifier(x)


def build():
    return TinyNet()

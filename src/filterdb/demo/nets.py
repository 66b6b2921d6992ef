"""The demo zoo's network families: small, for 16x16 inputs, trained in seconds on a CPU.

Every builder takes the input channels and a base ``width`` and returns a
``torch.nn.Module`` whose convolutions carry readable names. Families:

* ``vgg``: plain 3x3 conv stacks (2 per stage, 3 stages, max-pooling), widths w, 2w, 4w;
* ``resnet``: a stem and three residual blocks of two 3x3 convs, strided 3x3 convs and
  1x1 projections where the width changes;
* ``separable``: a 3x3 stem, then four depthwise 3x3 + pointwise 1x1 pairs (MobileNet-like),
  max-pooling after the first two;
* ``denoiser``: DnCNN-like conv stack with batch norm that predicts the noise;
* ``autoencoder``: strided conv encoder to a 4x4 code, transposed-conv decoder;
* ``generator`` / ``discriminator``: a DCGAN-like pair for 16x16 one-channel images
  (the discriminator's first conv is 5x5).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True, norm: bool = True) -> list[nn.Module]:
    """conv, batch norm (unless ``norm`` is false: then the conv has a bias), ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride,
                                         padding=kernel // 2, groups=groups, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU()] if relu else layers


class _PooledClassifier(nn.Module):
    """``features`` then global average pooling then a linear ``classifier``."""

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class VGG(_PooledClassifier):
    def __init__(self, in_channels: int, width: int, classes: int, norm: bool = True):
        super().__init__()
        widths = (width, width, 2 * width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        channels = in_channels
        for index, out in enumerate(widths):
            layers += conv_bn(channels, out, norm=norm)
            if index in (1, 3):
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, classes)


class Block(nn.Module):
    """Two 3x3 convs and a skip; the first conv strides and a 1x1 conv projects when the
    width or resolution changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Sequential(*conv_bn(c_in, c_out, stride=stride))
        self.conv2 = nn.Sequential(*conv_bn(c_out, c_out, relu=False))
        self.shortcut = (nn.Sequential(*conv_bn(c_in, c_out, 1, stride=stride, relu=False))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, width: int, classes: int):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(in_channels, width))
        self.layer1 = Block(width, width, 1)
        self.layer2 = Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 4 * width, 2)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class Separable(_PooledClassifier):
    def __init__(self, in_channels: int, width: int, classes: int):
        super().__init__()
        layers = conv_bn(in_channels, width)
        channels = width
        for index, out in enumerate((2 * width, 4 * width, 4 * width, 4 * width)):
            layers += conv_bn(channels, channels, groups=channels) + conv_bn(channels, out, 1)
            if index < 2:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, classes)


class Denoiser(nn.Module):
    """DnCNN-like: conv + ReLU, conv-BN-ReLU blocks, conv; predicts the noise and
    subtracts it."""

    def __init__(self, in_channels: int, width: int, depth: int = 5):
        super().__init__()
        layers = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += conv_bn(width, width)
        layers.append(nn.Conv2d(width, in_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)


class AutoEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4, 2 * width, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


LATENT = 16


class Generator(nn.Module):
    """Latent vector -> 4x4 -> 8x8 -> 16x16 through strided transposed convs with batch
    norm (DCGAN-like), a 3x3 conv to the image."""

    def __init__(self, out_channels: int, width: int, latent: int = LATENT):
        super().__init__()
        self.latent = latent
        self.width = width
        self.project = nn.Linear(latent, 4 * width * 16)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 3, stride=2, padding=1, output_padding=1,
                               bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1,
                               bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z):
        x = torch.relu(self.project(z)).view(-1, 4 * self.width, 4, 4)
        return self.out(self.up(x))


class Discriminator(nn.Module):
    """A 5x5 strided conv and two 3x3 convs with leaky ReLU, a linear score (no batch
    norm: with it, this small discriminator's filters stay as diverse as random ones)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.LeakyReLU(0.2))
        self.classifier = nn.Linear(4 * width * 16, 1)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


CLASSIFIERS = {"vgg": VGG, "resnet": ResNet, "separable": Separable}
FAMILY_NAMES = {"vgg": "plain VGG-like CNN", "resnet": "residual CNN",
                "separable": "depthwise-separable CNN", "denoiser": "denoising CNN",
                "autoencoder": "convolutional auto-encoder", "generator": "DCGAN-like generator",
                "discriminator": "DCGAN-like discriminator"}


def build(family: str, in_channels: int, width: int, classes: int = 10) -> nn.Module:
    """A fresh network of ``family`` (default initialisation)."""
    if family == "vgg-nobn":
        return VGG(in_channels, width, classes, norm=False)
    if family in CLASSIFIERS:
        return CLASSIFIERS[family](in_channels, width, classes)
    if family == "denoiser":
        return Denoiser(in_channels, width)
    if family == "autoencoder":
        return AutoEncoder(in_channels, width)
    if family == "generator":
        return Generator(in_channels, width)
    if family == "discriminator":
        return Discriminator(in_channels, width)
    raise ValueError(f"unknown network family {family!r}")


def initialise(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise conv weights: ``default`` (PyTorch's), ``kaiming_normal``,
    ``orthogonal`` or ``dcgan`` (normal, standard deviation 0.02); biases are zeroed
    for all but the default."""
    if scheme == "default":
        return model
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            if scheme == "kaiming_normal":
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif scheme == "orthogonal":
                nn.init.orthogonal_(module.weight)
            elif scheme == "dcgan":
                nn.init.normal_(module.weight, 0.0, 0.02)
            else:
                raise ValueError(f"unknown initialiser {scheme!r}")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def example_input(family: str, in_channels: int, size: int = 16) -> torch.Tensor:
    """An input of the right shape for export (batch of one)."""
    if family == "generator":
        return torch.zeros(1, LATENT)
    return torch.zeros(1, in_channels, size, size)

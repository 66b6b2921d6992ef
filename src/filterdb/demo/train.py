"""Training loops of the demo zoo: seeded, CPU-only, a fixed number of steps each.

Each ``train_*`` function takes a fresh network, a :class:`Recipe` and the data,
and returns the metrics it measured. Runs are deterministic for a given torch
version and thread count (one thread per worker process).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .recipe import Recipe


def optimizer(recipe: Recipe, parameters) -> torch.optim.Optimizer:
    if recipe.optimizer == "Adam":
        return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "SGD":
        return torch.optim.SGD(parameters, lr=recipe.lr, momentum=0.9, nesterov=True,
                               weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _schedule(opt: torch.optim.Optimizer, steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))


def subset(y: np.ndarray, samples: int | None, seed: int) -> np.ndarray:
    """Indices of ``samples`` examples, as equal per class as possible (all when None)."""
    if samples is None or samples >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    picked = [idx[:samples // len(classes) + (k < samples % len(classes))]
              for k, idx in enumerate(per_class)]
    return np.sort(np.concatenate(picked))


def _batches(n: int, recipe: Recipe, generator: torch.Generator):
    """Endless shuffled mini-batches of indices in [0, n)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - min(recipe.batch, n) + 1, min(recipe.batch, n)):
            yield order[start:start + recipe.batch]


def _fit(model: nn.Module, recipe: Recipe, n: int, batch_loss) -> tuple[list[float],
                                                                       torch.Generator]:
    """The shared loop: ``recipe.steps`` seeded mini-batches of indices in [0, n), each
    scored by ``batch_loss(batch, generator)`` and followed by one optimiser and one
    cosine-schedule step. Returns the losses and the generator (for later draws)."""
    opt = optimizer(recipe, model.parameters())
    schedule = _schedule(opt, recipe.steps)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    losses = []
    for _, batch in zip(range(recipe.steps), _batches(n, recipe, generator), strict=False):
        loss = batch_loss(batch, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses, generator


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(torch.from_numpy(x[i:i + 512])).argmax(1)
                               for i in range(0, len(x), 512)])
    return float((predicted.numpy() == y).mean())


def train_classifier(model: nn.Module, recipe: Recipe, x_train, y_train, x_test, y_test
                     ) -> dict:
    """Cross-entropy training; returns train size, final loss and test accuracy."""
    torch.manual_seed(recipe.seed)
    chosen = subset(y_train, recipe.samples, recipe.seed)
    x, y = torch.from_numpy(x_train[chosen]), torch.from_numpy(y_train[chosen])
    losses, _ = _fit(model, recipe, len(x),
                     lambda batch, _: F.cross_entropy(model(x[batch]), y[batch]))
    return {"train_samples": int(len(x)), "final_loss": float(np.mean(losses[-20:])),
            "test_accuracy": accuracy(model, x_test, y_test)}


def train_denoiser(model: nn.Module, recipe: Recipe, x_train, x_test, noise: float = 0.5
                   ) -> dict:
    """Gaussian-noise removal (mean squared error); returns PSNR gain on test patches."""
    torch.manual_seed(recipe.seed)
    x = torch.from_numpy(x_train)

    def batch_loss(batch, generator):
        clean = x[batch]
        noisy = clean + noise * torch.randn(clean.shape, generator=generator)
        return F.mse_loss(model(noisy), clean)

    _, generator = _fit(model, recipe, len(x), batch_loss)
    with torch.no_grad():
        clean = torch.from_numpy(x_test)
        noisy = clean + noise * torch.randn(clean.shape, generator=generator)
        before = float(F.mse_loss(noisy, clean))
        after = float(F.mse_loss(model(noisy), clean))
    return {"train_samples": int(len(x)), "noisy_mse": before, "denoised_mse": after}


def train_autoencoder(model: nn.Module, recipe: Recipe, x_train, x_test) -> dict:
    """Reconstruction (mean squared error) through the 4x4 code."""
    torch.manual_seed(recipe.seed)
    x = torch.from_numpy(x_train)
    _fit(model, recipe, len(x), lambda batch, _: F.mse_loss(model(x[batch]), x[batch]))
    with torch.no_grad():
        test = torch.from_numpy(x_test)
        mse = float(F.mse_loss(model(test), test))
    return {"train_samples": int(len(x)), "reconstruction_mse": mse}


def train_gan(generator_net: nn.Module, discriminator: nn.Module, recipe: Recipe,
              x_train) -> dict:
    """Non-saturating GAN loss, Adam (beta1 0.5) for both networks."""
    torch.manual_seed(recipe.seed)
    x = torch.from_numpy(x_train)
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(generator_net.parameters(), lr=recipe.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=recipe.lr, betas=betas)
    rng = torch.Generator().manual_seed(recipe.seed)
    generator_net.train()
    discriminator.train()
    d_losses, g_losses = [], []
    for _, batch in zip(range(recipe.steps), _batches(len(x), recipe, rng), strict=False):
        real = x[batch]
        z = torch.randn(len(real), generator_net.latent, generator=rng)
        fake = generator_net(z)
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        d_loss = (F.binary_cross_entropy_with_logits(discriminator(real), ones)
                  + F.binary_cross_entropy_with_logits(discriminator(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(discriminator(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d_losses.append(d_loss.item())
        g_losses.append(g_loss.item())
    generator_net.eval()
    discriminator.eval()
    return {"train_samples": int(len(x)), "d_loss": float(np.mean(d_losses[-20:])),
            "g_loss": float(np.mean(g_losses[-20:]))}

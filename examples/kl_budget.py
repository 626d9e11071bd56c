"""A KL budget in your own training loop: your model, your data, your optimizer; λ from constrained-vae.

A linear VAE on data of a known spectrum, where the effective β of a budget ε has a closed form
(``constrained_vae.core.linear_gaussian.beta_for_rate``): the learned λ should end near it.
Run: ``python examples/kl_budget.py [--steps N] [--epsilon NATS]``.
"""

import argparse
import math

import torch
from torch import nn

from constrained_vae import KLBudget
from constrained_vae.core.linear_gaussian import beta_for_rate


class LinearVAE(nn.Module):
    # μ = A x + b with one learned posterior variance per latent; x̂ = W z + c; a Gaussian decoder of σ = 1.
    # forward returns the batch's NLL and KL, each in nats per sample (sum over dimensions, mean over the batch).
    def __init__(self, features: int, latent: int) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(features, latent), nn.Linear(latent, features)
        self.log_var = nn.Parameter(torch.zeros(latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(x), self.log_var.expand(len(x), -1)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        nll = (0.5 * (x - self.decoder(z)) ** 2 + 0.5 * math.log(2 * math.pi)).sum(1).mean()
        kl = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(1).mean()
        return nll, kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--epsilon", type=float, default=2.0, help="the KL budget, nats per sample")
    args = parser.parse_args()
    torch.manual_seed(0)
    spectrum = [16.0, 4.0, 1.0]
    data = torch.randn(20_000, 3) * torch.tensor(spectrum).sqrt()  # x ~ N(0, diag(spectrum))
    model = LinearVAE(3, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    budget = KLBudget(epsilon=args.epsilon)  # the log rule at rate 0.01, λ₀ = 1
    tail = []
    for step in range(args.steps):
        nll, kl = model(data[torch.randint(len(data), (256,))])
        loss = budget.lagrangian(nll, kl)  # NLL + λ·(KL − ε)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        budget.step()  # λ ← λ·exp(0.01·(KL − ε))
        if step >= 0.8 * args.steps:
            tail.append(torch.stack([nll.detach(), kl.detach(), budget.multiplier]))
    nll, kl, multiplier = torch.stack(tail).mean(0).tolist()
    print(
        f"last 20% of {args.steps} steps: NLL {nll:.3f}, KL {kl:.3f} nats (ε = {args.epsilon:g}), λ = {multiplier:.3f}"
    )
    print(f"closed form: β*(ε) = {beta_for_rate(args.epsilon, spectrum):.3f}")


if __name__ == "__main__":
    main()

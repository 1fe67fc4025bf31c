"""Factorize a trained MLP: every dense layer W becomes U S (S a fixed Gaussian sketch,
U = W S^+ so the trained function is kept as closely as the sketch allows), then fine-tune U.

Data: the embedded MNIST subset, 10 classes, 1000 training / 500 test images (rows scaled to
norm sqrt(784), i.e. entries O(1)).  Run: python examples/factorize_mlp.py  (about 10 s on
two CPU cores).
"""

import math

import torch
from torch import nn

from ntkdr import factorization_summary, factorize, load_dataset

torch.manual_seed(0)
ds = load_dataset("mnist", task="multiclass")
scale = math.sqrt(ds.X_train.shape[1])
X = torch.as_tensor(ds.X_train, dtype=torch.float32) * scale
y = torch.as_tensor(ds.y_train)
Xt = torch.as_tensor(ds.X_test, dtype=torch.float32) * scale
yt = torch.as_tensor(ds.y_test)


def train(model: nn.Module, epochs: int, lr: float = 2e-3) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()


def accuracy(model: nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(Xt).argmax(dim=1) == yt).float().mean().item()
    model.train()
    return acc


mlp = nn.Sequential(
    nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
)
train(mlp, epochs=12)
acc_dense = accuracy(mlp)

k = 96
# the two hidden layers (784 -> 256, 256 -> 128); the 128 -> 10 readout is left dense, since
# U S would cost more there (k (128 + 10) > 128 * 10 multiply-adds)
fact = factorize(mlp, k, init="project", seed=0, layers=["0", "2"])
acc_projected = accuracy(fact)
train(fact, epochs=5)  # fine-tune U and the biases; S stays fixed
acc_finetuned = accuracy(fact)

summary = factorization_summary(fact)
t = summary.totals()
print(summary)
print(f"test accuracy: dense {acc_dense:.3f}")
print(f"test accuracy: factorized k={k} (U = W S^+) {acc_projected:.3f}")
print(f"test accuracy: factorized k={k}, fine-tuned 5 epochs {acc_finetuned:.3f}")
print(
    f"trained parameters {t['params_before']} -> {t['params_after']}, "
    f"multiply-adds per example {t['macs_before']} -> {t['macs_after']}"
)

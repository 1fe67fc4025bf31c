"""Dense vs factorized (W = U S) two-layer ReLU networks on the embedded MNIST subset.

Run: python examples/dense_vs_factorized.py   (about 10 seconds on two CPU cores)
"""

import torch

from ntkdr import (
    TwoLayerReLU,
    fit,
    generalization_bound,
    lambda_min,
    load_dataset,
    make_sketch,
    two_layer_ntk,
)
from ntkdr.theory import cost

ds = load_dataset("mnist", n_train=1000, n_test=500)  # even vs odd digits, rows of norm 1, d = 784
X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)
Xt, yt = torch.as_tensor(ds.X_test), torch.as_tensor(ds.y_test)
d, m, k = X.shape[1], 1024, 64

# Guarantees: the analytic NTK Gram matrix of the dense and of the sketched inputs.
S = make_sketch("srht", d, k, seed=0, renormalize=True)
H, H_sk = two_layer_ntk(X), two_layer_ntk(S(X))
print(f"lambda_min: dense {lambda_min(H):.4f}  sketched {lambda_min(H_sk):.4f}")
print(
    f"bound:      dense {generalization_bound(H, y).value:.3f}  sketched {generalization_bound(H_sk, y).value:.3f}"
)

# Training: same width, same seed; the factorized net trains only U (m x k) on S x.
for name, sketch in (("dense", None), (f"srht k={k}", S)):
    net = TwoLayerReLU(d, m, sketch=sketch, seed=0, dtype=torch.float64)
    hist = fit(net, X, y, steps=100, progress=False)  # lr = 1 / lambda_max(NTK at init)
    with torch.no_grad():
        err = (torch.sign(net(Xt)) != yt).double().mean().item()
    print(
        f"{name:>10}: loss {hist.train_loss[0]:.1f} -> {hist.train_loss[-1]:.1f}, test error {err:.3f}, "
        f"{1e3 * hist.seconds_per_step:.1f} ms/step"
    )

c = cost(d, m, k, "srht", n=X.shape[0])
print(f"multiply-adds per step: dense / factorized = {c['speedup_train']:.1f}")

"""Factorize the feed-forward layers of a small transformer encoder and compare its empirical
NTK with the dense model's on the same images.

Each MNIST image (embedded subset, even vs odd, labels +-1) is read as a sequence of 28 rows of
28 pixels.  The two feed-forward layers of every encoder layer (32 -> 128 -> 32) become
U S with k = 16; the attention projections stay dense (nn.MultiheadAttention reads its output
projection's weight directly, so factorize would skip it anyway).  Run:
python examples/factorize_transformer.py  (about 20 s on two CPU cores).
"""

import math
import warnings

import torch
from torch import nn

from ntkdr import compare, factorization_summary, factorize, load_dataset


class RowTransformer(nn.Module):
    """(n, 784) images -> (n,) scores: 28 row tokens, a 2-layer encoder, mean pooling."""

    def __init__(self, d_model: int = 32, ff: int = 128) -> None:
        super().__init__()
        self.embed = nn.Linear(28, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(-1, 28, 28))
        return self.head(self.encoder(h).mean(dim=1)).squeeze(-1)


# torch.func has no batching rule for CPU flash attention yet: it falls back (slower), says so
warnings.filterwarnings("ignore", message="There is a performance drop")
torch.manual_seed(0)
ds = load_dataset("mnist")
n = 32
X = torch.as_tensor(ds.X_train[:n], dtype=torch.float64) * math.sqrt(784)
y = torch.as_tensor(ds.y_train[:n], dtype=torch.float64)

dense = RowTransformer().double()
fact = factorize(dense, 16, layers=lambda name, mod: name.endswith(("linear1", "linear2")))
print(factorization_summary(fact))

c = compare(dense, fact, X, y)
r = c.as_dict()
print(f"kernel method: {r['method_a']} / {r['method_b']} ({n} images)")
print(
    f"lambda_min: dense {r['lambda_min_a']:.4g}  factorized {r['lambda_min_b']:.4g}  ratio {r['lambda_min_ratio']:.3f}"
)
print(
    f"bound ratio {r['bound_ratio']:.3f}  relative Frobenius distance {r['relative_frobenius']:.3f}  alignment {r['alignment']:.4f}"
)
print(f"trained parameters: dense {r['params_a']}  factorized {r['params_b']}")
print(
    f"seconds per forward / backward ({n} images): dense {r['seconds_forward_a']:.4f} / "
    f"{r['seconds_backward_a']:.4f}  factorized {r['seconds_forward_b']:.4f} / {r['seconds_backward_b']:.4f}"
)

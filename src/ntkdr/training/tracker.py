"""What :func:`~ntkdr.training.fit` records at a tracked step: losses, test metrics, weight movement, pattern flips and the NTK drift.

:class:`Tracker` appends one entry per tracked step to the run's
:class:`~ntkdr.training.checkpoints.History`; under data parallelism the test-set sums are
taken over the ranks' shards and the NTK drift (``n x n`` kernels) is computed on rank 0 and
broadcast.  It also asks the user's ``callback`` whether to stop (one rank's answer stops all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ntkdr.theory.spectra import top_eigenvalue
from ntkdr.training.checkpoints import History
from ntkdr.training.stepsize import _empirical_kernel
from ntkdr.training.trainer import _NAN, _accuracy, _accuracy_kind, _half_sq, _Trainer


def _spectral_norm_sym(D: torch.Tensor) -> float:
    """``||D||_2`` of a symmetric matrix: max |eigenvalue| (float64)."""
    D64 = D.detach().to(torch.float64)
    D64 = 0.5 * (D64 + D64.T)
    return top_eigenvalue(D64, magnitude=True)


class Tracker:
    """Records the tracked steps of one run into ``hist``.

    ``Xs`` / ``ys``: the full test set (or None); ``W0`` the first-layer weights at init
    (TwoLayerReLU; None otherwise); ``K0`` / ``K0_norm`` the empirical NTK at init and its
    spectral norm (rank 0); ``track_ntk``: whether the drift is tracked at all, then
    ``ntk_every``: ``None`` at the first and last step, ``k`` every k steps and at the last.
    """

    def __init__(
        self,
        hist: History,
        trainer: _Trainer,
        Xs: torch.Tensor | None,
        ys: torch.Tensor | None,
        *,
        W0: torch.Tensor | None,
        K0: torch.Tensor | None,
        K0_norm: float,
        track_ntk: bool,
        ntk_every: int | None,
        steps: int,
        callback: Callable[..., Any] | None,
    ) -> None:
        self.hist, self.trainer = hist, trainer
        self.model: Any = trainer.model
        self.comm = trainer.comm
        self.W0, self.K0, self.K0_norm = W0, K0, K0_norm
        self.track_ntk, self.ntk_every = track_ntk, ntk_every
        self.steps, self.callback = steps, callback
        self.bar: Any = None
        self.Xs, self.ys = Xs, ys
        # test set: this rank's shard of it (all of it without data parallelism)
        self.n_test = Xs.shape[0] if Xs is not None else 0
        tsl = self.comm.shard(self.n_test) if self.comm is not None else slice(0, self.n_test)
        self.test_rows = tsl.stop > tsl.start
        self.Xs_l = Xs[tsl] if Xs is not None else None
        self.ys_l = ys[tsl] if ys is not None else None
        self.Fs = None
        if Xs is not None and trainer.F is not None and self.test_rows:
            with torch.no_grad():
                self.Fs = self.model.features(self.Xs_l)
        self.acc_kind = _accuracy_kind(ys) if ys is not None else None

    def _test_metrics(self) -> None:
        hist, trainer, comm = self.hist, self.trainer, self.comm
        Xs, ys, acc_kind = self.Xs, self.ys, self.acc_kind
        if Xs is None or ys is None:
            return
        if comm is None:
            us = trainer.outputs(Xs, self.Fs).reshape(ys.shape)
            hist.test_loss.append(float(_half_sq(us, ys)))
            if acc_kind is not None:
                hist.test_accuracy.append(_accuracy(us, ys, acc_kind))
            return
        tl = hits = 0.0  # sums over the ranks' test shards
        if self.test_rows and self.Xs_l is not None and self.ys_l is not None:
            us = trainer.outputs(self.Xs_l, self.Fs).reshape(self.ys_l.shape)
            tl = float(_half_sq(us, self.ys_l))
            if acc_kind is not None:
                hits = _accuracy(us, self.ys_l, acc_kind) * self.ys_l.shape[0]
        tl, hits = comm.scalars(tl, hits)
        hist.test_loss.append(tl)
        if acc_kind is not None:
            hist.test_accuracy.append(round(hits) / self.n_test)

    def _drift_due(self, t: int) -> bool:
        every, steps = self.ntk_every, self.steps
        return bool(
            (every is None and (t == 0 or t == steps)) or (every and (t % every == 0 or t == steps))
        )

    def _two_layer_metrics(self, t: int, flips: float | None) -> None:
        hist, model, trainer, comm = self.hist, self.model, self.trainer, self.comm
        with torch.no_grad():
            dW = model.W.detach() - self.W0
            hist.weight_change_fro.append(float(dW.norm()))
            hist.weight_change_max_row.append(float(dW.norm(dim=1).max()))
        hist.pattern_flip_fraction.append(_NAN if flips is None else flips)
        want = self.track_ntk and self._drift_due(t)
        if want and t == 0:
            hist.ntk_drift.append(0.0)
        elif want:

            def drift() -> tuple[float, None]:
                Kt = _empirical_kernel(model, trainer.X, trainer.F)
                return _spectral_norm_sym(Kt - self.K0) / self.K0_norm, None

            hist.ntk_drift.append(drift()[0] if comm is None else comm.root_call(drift)[0])
        else:
            hist.ntk_drift.append(_NAN)

    def record(self, t: int, loss: float, flips: float | None, wall: float) -> bool:
        """Append step ``t`` (training loss ``loss``, pattern flips, ``wall`` seconds so far);
        return whether the callback asks to stop."""
        hist = self.hist
        hist.step.append(t)
        hist.train_loss.append(loss)
        hist.wall_time.append(wall)
        self._test_metrics()
        if self.trainer.two_layer:
            self._two_layer_metrics(t, flips)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        stop = bool(self.callback(t, self.model, hist)) if self.callback is not None else False
        if self.comm is not None:  # one rank's callback stops all of them at the same step
            stop = self.comm.any(stop)
        return stop

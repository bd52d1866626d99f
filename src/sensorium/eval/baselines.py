"""Closed-form linear baselines between frozen features, fitted on the training split: ridge regression
(source features -> target features) and regularised CCA (both into a shared k-dim space). They show what
a learned projection adds over linear algebra on the same features."""

from __future__ import annotations

import torch


def _standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


class RidgeMap:
    """Least squares with an L2 penalty, mapping standardised source features onto target features."""

    def __init__(self, alpha: float = 10.0):
        self.alpha = alpha

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "RidgeMap":
        x, y = x.double(), y.double()
        self.mx, self.sx = x.mean(0), x.std(0).clamp_min(1e-6)
        self.my = y.mean(0)
        xs = _standardize(x, self.mx, self.sx)
        gram = xs.T @ xs + self.alpha * torch.eye(xs.shape[1], dtype=xs.dtype)
        self.w = torch.linalg.solve(gram, xs.T @ (y - self.my))
        return self

    def source(self, x: torch.Tensor) -> torch.Tensor:
        return (_standardize(x.double(), self.mx, self.sx) @ self.w).float()

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return (y.double() - self.my).float()


class CCAMap:
    """Regularised CCA: whiten each side, SVD of the cross-covariance, keep the top-k canonical directions."""

    def __init__(self, k: int = 128, reg: float = 1e-2):
        self.k, self.reg = k, reg

    @staticmethod
    def _inv_sqrt(c: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(c)
        return vecs @ torch.diag(vals.clamp_min(1e-9).rsqrt()) @ vecs.T

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "CCAMap":
        x, y = x.double(), y.double()
        self.mx, self.my = x.mean(0), y.mean(0)
        xc, yc = x - self.mx, y - self.my
        n = x.shape[0]
        cxx = xc.T @ xc / n
        cyy = yc.T @ yc / n
        cxx += self.reg * cxx.diagonal().mean() * torch.eye(cxx.shape[0], dtype=x.dtype)
        cyy += self.reg * cyy.diagonal().mean() * torch.eye(cyy.shape[0], dtype=y.dtype)
        wx, wy = self._inv_sqrt(cxx), self._inv_sqrt(cyy)
        u, s, vt = torch.linalg.svd(wx @ (xc.T @ yc / n) @ wy)
        k = min(self.k, s.shape[0])
        # weight each direction by its canonical correlation so strong directions dominate the cosine
        self.px = wx @ u[:, :k] * s[:k]
        self.py = wy @ vt.T[:, :k] * s[:k]
        return self

    def source(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mx) @ self.px).float()

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return ((y.double() - self.my) @ self.py).float()


BASELINES = {"ridge": RidgeMap, "cca": CCAMap}

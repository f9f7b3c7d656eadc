"""The learned selector's model and its calibration record (numpy only, a few hundred numbers of state).

``OnlineLogistic``: logistic regression fitted online by one Newton step per training step on a
decayed quadratic (Laplace) approximation of the past loss: with H the decayed curvature,

    H <- gamma H + (1 - gamma) ridge I + X^T diag(s p (1 - p)) X,    w <- w - H^-1 (X^T s (p - y))

(``s``: the examples' weights). It is the recursive / extended-Kalman form of Bayesian logistic
regression with forgetting: an example counts half after ``half_life`` steps, so the model follows
the policy as it moves, and nothing but w and H is kept (no stored examples).

``Calibration``: histograms [2, BINS] of the predictions made before each group's outcome was known
(the prequential record: the model never saw the label it is judged on), split by outcome, from
which the reliability table and the AUC over the run are read.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

BINS = 100  # calibration histogram resolution (AUC ties are counted half within a bin)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


class OnlineLogistic:
    def __init__(self, dim: int, half_life: float, ridge: float) -> None:
        self.gamma = 0.5 ** (1.0 / half_life)
        self.ridge = ridge
        self.w = np.zeros(dim)
        self.H = ridge * np.eye(dim)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """P(label 1) [P] for features X [P, D]."""
        return sigmoid(X @ self.w)

    def update(self, X: np.ndarray, y: np.ndarray, s: np.ndarray) -> None:
        """One Newton step on the examples X [B, D], labels y [B] in {0, 1}, weights s [B]."""
        d = len(self.w)
        p = self.predict(X)
        self.H = self.gamma * self.H + (1 - self.gamma) * self.ridge * np.eye(d) + (X * (s * p * (1 - p))[:, None]).T @ X
        g = X.T @ (s * (p - y))
        self.w = self.w - np.linalg.solve(self.H, g)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.tolist(), "H": self.H.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.w, self.H = np.array(state["w"], np.float64), np.array(state["H"], np.float64)


class Calibration:
    """Out-of-sample predictions of P(zero variance), binned by outcome: ``hist[1]`` zero-variance groups."""

    def __init__(self) -> None:
        self.hist = np.zeros((2, BINS), np.int64)

    def add(self, pred: np.ndarray, zero_variance: np.ndarray) -> None:
        b = np.minimum((np.asarray(pred) * BINS).astype(np.int64), BINS - 1)
        np.add.at(self.hist, (np.asarray(zero_variance, np.int64), b), 1)

    def auc(self) -> float | None:
        return auc_from_histogram(self.hist)

    def table(self, bins: int = 10) -> list[dict[str, float]]:
        return reliability(self.hist, bins)


def auc_from_histogram(hist: np.ndarray) -> float | None:
    """P(a zero-variance group was predicted higher than an informative one) [ties half], from [2, B] counts."""
    neg, pos = np.asarray(hist[0], np.float64), np.asarray(hist[1], np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def reliability(hist: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Rows (lo, hi, groups, mean predicted, observed zero-variance rate) of ``bins`` equal-width bins
    of the predicted P(zero variance), from a [2, B] histogram (B a multiple of ``bins``)."""
    hist = np.asarray(hist, np.float64)
    B = hist.shape[1]
    centre = (np.arange(B) + 0.5) / B
    rows = []
    for j in range(bins):
        sl = slice(j * B // bins, (j + 1) * B // bins)
        n = hist[:, sl].sum()
        rows.append({"lo": j / bins, "hi": (j + 1) / bins, "groups": float(n),
                     "predicted": float((hist[:, sl].sum(0) * centre[sl]).sum() / n) if n else None,
                     "observed": float(hist[1, sl].sum() / n) if n else None})
    return rows

"""The linear probe: how well a logistic regression on a pretrained model's frozen top features
separates task B.

It tells "the features are good" apart from "fine-tuning used them well": an encoder whose probe
scores high but whose fine-tuned model B does not has been spoiled by fine-tuning. LP-FT starts
fine-tuning from the same fit.

The fit is scikit-learn's default logistic regression: an L2 penalty of 1/2 ||w||^2 against C
times the summed log loss, bias unpenalised, on features standardised with the training set's
mean and deviation. Newton's method solves it exactly in a few steps, since the features number
at most a few hundred.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Probe:
    """A fitted logistic regression on standardised features."""

    weights: np.ndarray  # (d,), on standardised features
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def probability(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def accuracy(self, features: np.ndarray, y: np.ndarray) -> float:
        """The share of `y` the probe predicts; NaN for a probe whose fit failed (weights not
        finite), since NaN probabilities would all read as class 0 and score the negatives' share."""
        if not (np.all(np.isfinite(self.weights)) and np.isfinite(self.bias)):
            return float("nan")
        return float(np.mean((self.probability(features) > 0.5) == (np.asarray(y) > 0.5)))

    def as_dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel (d, 1), bias (1,)) of a Dense(1, sigmoid) on the raw features computing the same."""
        kernel = self.weights / self.scale
        bias = self.bias - float(np.sum(kernel * self.mean))
        return kernel[:, None].astype(np.float32), np.array([bias], dtype=np.float32)


def fit(features: np.ndarray, y: np.ndarray, c: float = 1.0, iterations: int = 100) -> Probe:
    """The L2-regularised logistic regression of `y` (0/1) on `features` (n, d). A `c` too large
    to solve for gives a probe whose weights are not finite, for the caller to refuse."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = (np.asarray(y, dtype=np.float64) > 0.5).astype(np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant feature carries nothing; leave it at zero
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.ones(z.shape[1])
    penalty[-1] = 0.0
    theta = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ theta)))
        gradient = c * z.T @ (p - y) + penalty * theta
        hessian = c * (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-10 * np.eye(len(theta))
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:  # a C so large that the penalty no longer counts: no fit
            step = np.full_like(theta, np.nan)
        theta -= step
        if not np.all(np.isfinite(theta)):
            break  # weights that are not finite: the caller's check names the setting (lp_ft.c)
        if np.max(np.abs(step)) < 1e-10:
            break
    return Probe(theta[:-1], float(theta[-1]), mean, scale)


def top_features(model, x: np.ndarray) -> np.ndarray:
    """What model B's head sees: the output of every layer but the last, flattened."""
    return _features(_below_head(model), x)


def linear_probe(model, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 c: float = 1.0) -> tuple[float, np.ndarray]:
    """(test accuracy, training features) of the probe fitted on `model`'s top features of `x`."""
    below = _below_head(model)  # one model, traced once for both sets
    features = _features(below, x)
    return fit(features, y, c).accuracy(_features(below, x_test), y_test), features


def _below_head(model):
    from fmtransfer.models import INPUT_SHAPE, keras

    return keras.Sequential([keras.Input(INPUT_SHAPE), *model.layers[:-1]])


def _features(below, x: np.ndarray) -> np.ndarray:
    from fmtransfer import training

    return training.predict(below, x).reshape(len(x), -1)

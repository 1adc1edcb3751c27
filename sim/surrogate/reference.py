"""Plain NumPy versions of the surrogate kernels' math, written independently of ``kernels``.

They exist to check the kernels (tests compare step by step) and to time them (``bench/bench_surrogate``).
They use whole-array operations, which is idiomatic NumPy; each creates temporaries and pays one Python
dispatch per operation, which is exactly what the fused Numba loops avoid.
"""

from __future__ import annotations

import numpy as np


def split(flat: np.ndarray, dim: int, hidden: int, classes: int):
    """Views (W1 (dim, hidden), b1, W2 (classes, hidden), b2) of a flat vector (layout in ``kernels``)."""
    o1 = dim * hidden
    o2 = o1 + hidden
    o3 = o2 + classes * hidden
    return (flat[:o1].reshape(dim, hidden), flat[o1:o2], flat[o2:o3].reshape(classes, hidden),
            flat[o3:o3 + classes])


def softmax_cross_entropy(z, labels):
    """(mean cross-entropy, its gradient w.r.t. the logits) for logits ``z`` (n, k), overwritten."""
    n = len(labels)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    tot = e.sum(axis=1)
    pick = np.arange(n)
    loss = float(np.mean(np.log(tot) - z[pick, labels]))
    dz = e / tot[:, None]
    dz[pick, labels] -= 1.0
    dz /= n
    return loss, dz


def loss_grad(params, X, y, rows, hidden, classes, grad):
    """Mean softmax cross-entropy of ``X[rows]`` and its gradient written into ``grad``."""
    dim = X.shape[1]
    W1, b1, W2, b2 = split(params, dim, hidden, classes)
    gW1, gb1, gW2, gb2 = split(grad, dim, hidden, classes)
    xb, yb = X[rows], y[rows]
    pre = xb @ W1 + b1
    h = np.maximum(pre, 0.0)
    loss, dz = softmax_cross_entropy(h @ W2.T + b2, yb)
    gW2[:] = dz.T @ h
    gb2[:] = dz.sum(axis=0)
    dh = dz @ W2
    dh *= pre > 0.0
    gW1[:] = xb.T @ dh
    gb1[:] = dh.sum(axis=0)
    return loss


def evaluate(params, X, y, hidden, classes):
    """(mean cross-entropy, accuracy) over all rows."""
    W1, b1, W2, b2 = split(params, X.shape[1], hidden, classes)
    z = np.maximum(X @ W1 + b1, 0.0) @ W2.T + b2
    zmax = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y])), float(np.mean(z.argmax(axis=1) == y))


def adamw_step(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """``torch.optim.AdamW`` semantics, in place; ``t`` is the 1-based number of this update."""
    params *= 1.0 - lr * weight_decay
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    denom = np.sqrt(v) / np.sqrt(1.0 - beta2 ** t)
    denom += eps
    params -= (lr / (1.0 - beta1 ** t)) * m / denom


def nesterov_step(theta, velocity, delta, lr, momentum):
    """``torch.optim.SGD(momentum=mu, nesterov=True, dampening=0)`` on gradient ``delta``, in place."""
    velocity *= momentum
    velocity += delta
    theta -= lr * (delta + momentum * velocity)


def weighted_mean(deltas, weights):
    w = np.asarray(weights, dtype=np.float64)
    return (w / w.sum()) @ deltas


def rda(deltas, weights):
    """Radial-directional averaging by its definition, zero-norm vectors given no direction."""
    w = np.asarray(weights, dtype=np.float64)
    norms = np.linalg.norm(deltas, axis=1)
    radius = (w @ norms) / w.sum()
    unit = np.divide(deltas, norms[:, None], out=np.zeros_like(deltas), where=norms[:, None] > 0)
    direction = (w @ unit) / w.sum()
    dn = np.linalg.norm(direction)
    return radius * direction / dn if dn > 0 else np.zeros(deltas.shape[1])


def quantize(deltas, bits):
    """Per-row absmax quantisation to ``bits`` (1: scaled sign; >= 16: unchanged), as a new array."""
    if bits >= 16:
        return deltas.copy()
    mag = np.abs(deltas)
    if bits == 1:
        return np.sign(deltas) * mag.mean(axis=1, keepdims=True)
    amax = mag.max(axis=1, keepdims=True)
    step = np.where(amax > 0, amax / (2 ** (bits - 1) - 1), 1.0)
    return np.sign(deltas) * np.floor(mag / step + 0.5) * step


def bigram_loss_grad(params, pairs, vocab, grad):
    """Mean cross-entropy of the (context, next) ``pairs`` under the logit table, gradient into ``grad``."""
    ctx = pairs[:, 0]
    loss, dz = softmax_cross_entropy(params.reshape(vocab, vocab)[ctx], pairs[:, 1])
    g = np.zeros((vocab, vocab))
    np.add.at(g, ctx, dz)
    grad[:] = g.ravel()
    return loss


def bigram_evaluate(params, target, vocab):
    """(expected cross-entropy, expected accuracy) of the table against ``target``, contexts uniform."""
    W = params.reshape(vocab, vocab)
    log_p = W - (np.log(np.exp(W - W.max(axis=1, keepdims=True)).sum(axis=1)) + W.max(axis=1))[:, None]
    return float(-np.sum(target * log_p) / vocab), float(np.mean(target[np.arange(vocab), W.argmax(axis=1)]))

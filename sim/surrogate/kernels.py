"""Numba kernels of the surrogate workload: a two-layer MLP, AdamW, outer Nesterov SGD and merge rules.

Every kernel works in place on C-contiguous ``float64`` arrays and allocates nothing per step (a burst of
steps allocates its scratch once), so a learner's inner step is five small matrix products and a handful of
fused loops instead of the dozens of temporaries NumPy creates.

Precision
    ``float64`` throughout. The model is tiny, so float32 saves little here (the per-step cost is dominated
    by loop and call overhead, not memory bandwidth), while float64 lets the tests check gradients against
    finite differences and the optimizers against NumPy references to ~1e-10.

Determinism
    Kernels are compiled with ``fastmath`` limited to reassociation, FMA contraction and signed zeros:
    that lets LLVM vectorise dot products (which needs reassociation) but keeps NaN/Inf semantics and
    exact divisions. Matrix products are ``np.dot``, which Numba hands to SciPy's BLAS (OpenBLAS); OpenBLAS
    splits a product over threads by blocks of the output, never along the sum, so the bits do not depend
    on its thread count (checked at 1 and 2 threads up to 128 -> 256 -> 10, batch 128). The result is a pure
    function of the inputs on a given machine and build (the same seed gives bit-identical parameters); it
    may differ in the last bits from NumPy or from another CPU or BLAS build.

Parameter layout (one flat vector of length ``param_count(dim, hidden, classes)``)::

    [0,            dim*hidden)          W1  shape (dim, hidden)     row i: input i -> every hidden unit
    [dim*hidden,   +hidden)             b1  shape (hidden,)
    [...,          +classes*hidden)     W2  shape (classes, hidden) row c: every hidden unit -> class c
    [...,          +classes)            b2  shape (classes,)

The hidden index is the fastest-varying one in both matrices, so every inner loop of forward and backward
runs over ``hidden`` contiguous numbers (an axpy or a dot product), which is what vectorises well. The
model is ``h = relu(x @ W1 + b1)``, ``z = h @ W2.T + b2``, loss = softmax cross-entropy of ``z``.
Fragments of the flat vector are contiguous slices of it (see ``Surrogate.fragment_slices``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Reassociation lets LLVM vectorise reductions (dot products, norms); we leave out 'nnan'/'ninf' so a
# diverging run still shows NaN/Inf instead of undefined behaviour.
FASTMATH = {"reassoc", "contract", "nsz"}
# Every kernel uses error_model="numpy": a float division by zero gives inf/nan instead of raising.
# Numba's default ("python") model checks every division for zero, a branch inside the loop, and that
# alone stops LLVM from vectorising AdamW (measured: 3.6 us -> 1.0 us per step at the default size).


def param_count(dim: int, hidden: int, classes: int) -> int:
    """Length of the flat parameter vector of a ``dim -> hidden -> classes`` MLP."""
    return dim * hidden + hidden + classes * hidden + classes


@numba.njit(cache=True, error_model="numpy")
def _split(flat, dim, hidden, classes):
    """Views (W1, b1, W2, b2) into a flat parameter (or gradient) vector; no copy."""
    o1 = dim * hidden
    o2 = o1 + hidden
    o3 = o2 + classes * hidden
    return (flat[:o1].reshape((dim, hidden)), flat[o1:o2],
            flat[o2:o3].reshape((classes, hidden)), flat[o3:o3 + classes])


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _forward(W1, b1, W2, b2, X, r, h, z):
    """Hidden activations into ``h`` and logits into ``z`` for sample ``X[r]``; returns max(z).

    Matrices are indexed ``W1[i, j]`` rather than through row views (``w = W1[i]``): a view per row is a
    small object built in the loop, and indices that are all loop counters need no negative-index
    check, so the inner loops vectorise (measured: the forward pass in half the time)."""
    dim, hidden = W1.shape
    for j in range(hidden):
        h[j] = b1[j]
    # x @ W1 as a sum of scaled rows: an axpy per input, vectorised over hidden without reassociation.
    for i in range(dim):
        xi = X[r, i]
        for j in range(hidden):
            h[j] += xi * W1[i, j]
    for j in range(hidden):
        h[j] = max(h[j], 0.0)
    zmax = -np.inf
    for c in range(b2.size):
        s = b2[c]
        for j in range(hidden):
            s += W2[c, j] * h[j]
        z[c] = s
        zmax = max(zmax, s)
    return zmax


# exp(x) for x <= 0 by Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a degree-13 Taylor polynomial in r
# (truncation below 1e-17 relative) and 2^n built from its exponent bits. Unlike ``math.exp``, a loop of it
# vectorises (llvmlite has no vector libm here), which takes the softmax's exponentials from 0.8 us to 0.2 us
# per step at the default size. Within 1 ulp of libm's exp on [-708, 0] (``tests/test_surrogate.py``).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^20
_LN2_LO = 1.90821492927058770002e-10
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))
_EXP_MIN_ARG = -708.0  # exp(-708) ~ 3e-308: from here up 2^n is a normal number (n >= -1021)


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exp_nonpositive(x, bits):
    """``x[k] <- exp(x[k])`` in place for ``x[k] <= 0``; arguments below -708 give exp(-708) (~3e-308).

    ``bits`` is int64 scratch of ``x.size``: it holds the exponent bits of 2^n between the two loops, so
    both loops are branch-free and vectorise."""
    c = _EXP_TAYLOR
    scale = bits.view(np.float64)
    for k in range(x.size):
        v = max(x[k], _EXP_MIN_ARG)
        n = math.floor(v * _LOG2E + 0.5)
        r = (v - n * _LN2_HI) - n * _LN2_LO
        p = c[13]
        p = p * r + c[12]
        p = p * r + c[11]
        p = p * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[5]
        p = p * r + c[4]
        p = p * r + c[3]
        p = p * r + c[2]
        p = p * r + 1.0
        x[k] = p * r + 1.0
        bits[k] = (np.int64(n) + 1023) << 52
    for k in range(x.size):
        x[k] *= scale[k]


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _loss_grad_ws(params, X, y, rows, hidden, classes, grad, Xb, H, Z, DH, zshift, bits):
    """Mean loss over ``rows``; mean gradient written into ``grad``.

    The batch goes through as matrices: five small matrix products (``np.dot``, BLAS, as in the NumPy
    reference), each pass fused with its element-wise work. ``Xb`` (batch, dim), ``H`` and ``DH``
    (batch, hidden), ``Z`` (batch, classes), ``zshift`` (batch) and ``bits`` (batch * classes, int64)
    are scratch."""
    dim = X.shape[1]
    W1, b1, W2, b2 = _split(params, dim, hidden, classes)
    gW1, gb1, gW2, gb2 = _split(grad, dim, hidden, classes)
    batch = rows.size
    for b in range(batch):
        r = rows[b]
        for i in range(dim):
            Xb[b, i] = X[r, i]
    np.dot(Xb, W1, H)
    for b in range(batch):
        for j in range(hidden):
            H[b, j] = max(H[b, j] + b1[j], 0.0)
    np.dot(H, W2.T, Z)
    # logits shifted by their row maximum, so every exponential is of a number <= 0
    for b in range(batch):
        zmax = -np.inf
        for c in range(classes):
            Z[b, c] += b2[c]
            zmax = max(zmax, Z[b, c])
        for c in range(classes):
            Z[b, c] -= zmax
        zshift[b] = Z[b, y[rows[b]]]
    exp_nonpositive(Z.reshape(batch * classes), bits)
    scale = 1.0 / batch
    loss = 0.0
    for c in range(classes):
        gb2[c] = 0.0
    for b in range(batch):
        tot = 0.0
        for c in range(classes):
            tot += Z[b, c]
        loss += math.log(tot) - zshift[b]
        # dL/dz_c = softmax_c - [c == label], pre-scaled by 1/batch so grad ends up as the mean
        Z[b, y[rows[b]]] -= tot
        inv = scale / tot
        for c in range(classes):
            d = Z[b, c] * inv
            Z[b, c] = d
            gb2[c] += d
    np.dot(Z.T, H, gW2)
    np.dot(Z, W2, DH)
    for j in range(hidden):
        gb1[j] = 0.0
    for b in range(batch):
        for j in range(hidden):
            # ReLU gate (H was clamped, so H == 0 means inactive), as a select so the loop vectorises
            d = DH[b, j] if H[b, j] > 0.0 else 0.0
            DH[b, j] = d
            gb1[j] += d
    np.dot(Xb.T, DH, gW1)
    return loss * scale


@numba.njit(cache=True, error_model="numpy")
def _workspace(batch, dim, hidden, classes):
    """Scratch for ``_loss_grad_ws``: Xb, H, Z, DH, zshift, bits."""
    return (np.empty((batch, dim)), np.empty((batch, hidden)), np.empty((batch, classes)),
            np.empty((batch, hidden)), np.empty(batch), np.empty(batch * classes, np.int64))


@numba.njit(cache=True, error_model="numpy")
def mlp_loss_grad(params, X, y, rows, hidden, classes, grad):
    """Mean cross-entropy of samples ``X[rows], y[rows]``; overwrites ``grad`` with its gradient."""
    Xb, H, Z, DH, zshift, bits = _workspace(rows.size, X.shape[1], hidden, classes)
    return _loss_grad_ws(params, X, y, rows, hidden, classes, grad, Xb, H, Z, DH, zshift, bits)


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def mlp_evaluate(params, X, y, hidden, classes):
    """(mean cross-entropy, accuracy) over all rows of ``X, y``; forward only."""
    dim = X.shape[1]
    W1, b1, W2, b2 = _split(params, dim, hidden, classes)
    h = np.empty(hidden)
    z = np.empty(classes)
    loss = 0.0
    correct = 0
    for r in range(X.shape[0]):
        zmax = _forward(W1, b1, W2, b2, X, r, h, z)
        label = y[r]
        tot = 0.0
        best = 0
        for c in range(classes):
            if z[c] > z[best]:
                best = c
            tot += math.exp(z[c] - zmax)
        loss += math.log(tot) + zmax - z[label]
        if best == label:
            correct += 1
    n = X.shape[0]
    return loss / n, correct / n


@numba.njit(cache=True, error_model="numpy")
def adamw_step(params, grad, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """One AdamW update in place, PyTorch semantics; ``t`` is the 1-based number of this update.

    p <- p * (1 - lr*wd)                      (decoupled weight decay, applied before the Adam step)
    m <- b1 m + (1-b1) g ;  v <- b2 v + (1-b2) g^2
    p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
    """
    step = lr / (1.0 - beta1 ** t)
    inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2 ** t)
    _adamw_update(params, grad, m, v, step, inv_sqrt_bc2, 1.0 - lr * weight_decay, beta1, beta2, eps)


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _adamw_update(params, grad, m, v, step, inv_sqrt_bc2, decay, beta1, beta2, eps):
    """The element loop of ``adamw_step``. It is a function of its own because, inlined into a loop over
    steps, LLVM compiled it to code 1.8x slower (measured: 2.7 us against 1.5 us at 808 parameters)."""
    for i in range(params.size):
        g = grad[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        params[i] = params[i] * decay - step * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@numba.njit(cache=True, error_model="numpy")
def train_steps(params, m, v, t0, X, y, rows, hidden, classes, lr, beta1, beta2, eps, weight_decay, grad):
    """``rows.shape[0]`` fused inner steps (loss/grad on ``X[rows[s]]`` then AdamW); returns the mean loss.

    ``t0`` is the number of AdamW updates already applied to (m, v); the caller adds ``rows.shape[0]``.
    One call runs the whole loop so Python dispatch is paid once per call, not once per step.
    """
    Xb, H, Z, DH, zshift, bits = _workspace(rows.shape[1], X.shape[1], hidden, classes)
    total = 0.0
    n = rows.shape[0]
    for s in range(n):
        total += _loss_grad_ws(params, X, y, rows[s], hidden, classes, grad, Xb, H, Z, DH, zshift, bits)
        adamw_step(params, grad, m, v, t0 + s + 1, lr, beta1, beta2, eps, weight_decay)
    return total / n if n > 0 else np.nan


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def nesterov_step(theta, velocity, delta, lr, momentum):
    """Outer SGD step with Nesterov momentum, as ``torch.optim.SGD(nesterov=True, dampening=0)``.

    v <- mu v + delta ;  theta <- theta - lr (delta + mu v)
    (PyTorch seeds the buffer with the first gradient, which equals this rule from v = 0.)
    """
    for i in range(theta.size):
        d = delta[i]
        vi = momentum * velocity[i] + d
        velocity[i] = vi
        theta[i] -= lr * (d + momentum * vi)


@numba.njit(cache=True, error_model="numpy")
def outer_gradients(anchor, thetas, members, lo, hi, out):
    """``out[k] = anchor[lo:hi] - thetas[members[k], lo:hi]``: the outer gradients of one fragment."""
    for k in range(members.size):
        src = thetas[members[k]]
        dst = out[k]
        for i in range(hi - lo):
            dst[i] = anchor[lo + i] - src[lo + i]


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def weighted_mean(deltas, weights, out):
    """``out = sum_k w_k deltas[k] / sum_k w_k`` (weights normalised here; caller checks sum > 0)."""
    wsum = 0.0
    for k in range(weights.size):
        wsum += weights[k]
    out[:] = 0.0
    for k in range(weights.size):
        a = weights[k] / wsum
        row = deltas[k]
        for i in range(out.size):
            out[i] += a * row[i]


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _norm(x):
    s = 0.0
    for i in range(x.size):
        s += x[i] * x[i]
    return math.sqrt(s)


@numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def rda(deltas, weights, out):
    """Radial-directional average: ``(sum w|v| / sum w) * phi(sum w phi(v) / sum w)``, phi(x) = x/|x|.

    The radius is the weighted mean of the norms, so merging k nearly orthogonal outer gradients does not
    shrink the step like plain averaging does (norm ~ R/sqrt(k)). Zero vectors have no direction: they
    add to the radius (as 0) but not to the direction; if the directions cancel the result is zero.
    """
    wsum = 0.0
    radius = 0.0
    out[:] = 0.0
    for k in range(weights.size):
        row = deltas[k]
        n = _norm(row)
        wsum += weights[k]
        radius += weights[k] * n
        if n > 0.0:
            a = weights[k] / n
            for i in range(out.size):
                out[i] += a * row[i]
    radius /= wsum
    # The 1/sum(w) inside phi cancels in the normalisation, so it is skipped.
    un = _norm(out)
    a = radius / un if un > 0.0 else 0.0
    for i in range(out.size):
        out[i] *= a


# Outer gradients sent at this many bits per value or more are merged as computed (bf16 and wider: the
# rounding of a 16-bit float, relative 2^-9, is far below the quantisation studied here).
FULL_PRECISION_BITS = 16


@numba.njit(cache=True, error_model="numpy")
def quantize(deltas, bits):
    """Quantise each row of ``deltas`` (one member's outer gradient of one fragment) in place to ``bits``.

    bits >= 16: unchanged. 2 <= bits < 16: symmetric uniform absmax quantisation with
    ``L = 2^(bits-1) - 1`` levels on each side of zero: step ``s = max|x| / L`` (one scale per row, sent
    with it), ``q = sign(x) * floor(|x| / s + 1/2) * s`` (round to nearest, halves away from zero), so
    ``|q - x| <= s / 2``. bits = 1: ``q = sign(x) * mean|x|`` (the scaled sign of EF-signSGD; zeros stay
    zero). Deterministic: no random rounding. Not compiled with ``fastmath``, so the result equals the
    NumPy twin (``reference.quantize``) exactly for bits >= 2.
    """
    if bits >= FULL_PRECISION_BITS:
        return
    for k in range(deltas.shape[0]):
        row = deltas[k]
        if bits == 1:
            total = 0.0
            for i in range(row.size):
                total += abs(row[i])
            scale = total / row.size
            for i in range(row.size):
                x = row[i]
                row[i] = scale if x > 0.0 else (-scale if x < 0.0 else 0.0)
            continue
        amax = 0.0
        for i in range(row.size):
            amax = max(amax, abs(row[i]))
        if amax == 0.0:
            continue
        step = amax / ((1 << (bits - 1)) - 1)
        for i in range(row.size):
            x = row[i]
            row[i] = math.copysign(math.floor(abs(x) / step + 0.5), x) * step

"""Muon with torch ``Muon``'s semantics: momentum orthogonalized by a quintic
Newton-Schulz iteration, for 2-D parameters only, plus the one-line way to
give every other parameter another optimizer (:func:`muon_labels`).

Every numeric hyperparameter may be a number, a traced array, a schedule of
the step or a group tree of those. The Newton-Schulz iteration runs in the
arithmetic dtype of the leaf (at least float32) at full matmul precision.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._base import Hyper, Hypers, is_group_tree, next_count, per_group, zero_count
from ._checks import check_choice, check_flag, is_traced
from ._common import RULES, compute_dtype, full_like, hypers, safe_divide, storage_dtype, with_group_check
from ._elementwise import chain_stages, decoupled_decay, flip_sign, scale_by_learning_rate
from ._chain import friendly

# Keller Jordan's coefficients, torch's defaults.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

LOCAL_RULES: dict[str, dict[str, Any]] = {
    "ns_a": {},
    "ns_b": {},
    "ns_c": {},
    "ns_steps": {"low": 0.0, "high": 100.0, "high_open": True},
}

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class ScaleByMuonState(NamedTuple):
    """State of :func:`scale_by_muon`.

    Attributes:
        count: updates applied so far (int32, saturating).
        mu: the momentum buffer, in ``mu_dtype`` (default: the params' dtype).
        hyperparams: ``momentum``, ``eps``, ``ns_a``, ``ns_b``, ``ns_c`` (the
            Newton-Schulz coefficients) and ``ns_steps`` used by the last update.
    """

    count: jax.Array
    mu: optax.Updates
    hyperparams: dict[str, jax.Array]


def muon_labels(params: Any, other: str = "adamw") -> Any:
    """``"muon"`` for every 2-D leaf of ``params``, ``other`` for the rest:
    the labels for ``optax.partition``, so biases, norm scales and any
    non-matrix parameter get another optimizer, as torch and Optax recommend::

        opt = optax.partition({"muon": fnopt.muon(0.02), "adamw": fnopt.adamw(3e-4)}, fnopt.muon_labels)

    Embeddings and output heads are 2-D too; torch's Muon docs give them to
    AdamW as well: relabel those leaves (e.g. wrap this function and set
    ``labels["embed"] = "adamw"``). Works on params and on shape structs.

    Examples:
        >>> import jax.numpy as jnp, fnopt
        >>> fnopt.muon_labels({"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)})
        {'b': 'adamw', 'w': 'muon'}
    """
    return jax.tree.map(lambda x: "muon" if jnp.ndim(x) == 2 else other, params)


def _check_matrices(call: str, params: Any) -> None:
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = jax.tree_util.keystr(path) or "the root"
        if jnp.ndim(p) != 2:
            raise ValueError(
                f"`{call}`: Muon only supports 2-D parameters (as torch's Muon), got shape {jnp.shape(p)} at "
                f"{where}; give the others another optimizer: optax.partition({{'muon': fnopt.muon(...), "
                f"'adamw': fnopt.adamw(...)}}, fnopt.muon_labels)"
            )
        if jnp.iscomplexobj(p):
            raise ValueError(
                f"`{call}`: complex parameters are not supported (at {where}); Muon has no complex form "
                "here (torch's Muon raises too)"
            )


def _check_ns_steps(call: str, ns_steps: Hyper) -> None:
    """A concrete ``ns_steps`` (already a valid number by its rule) must be
    a whole number."""
    leaves = jax.tree.leaves(ns_steps, is_leaf=callable) if is_group_tree(ns_steps) else [ns_steps]
    for leaf in leaves:
        if callable(leaf) or is_traced(leaf):
            continue
        value = np.asarray(leaf, np.float64)
        if not np.all(value == np.floor(value)):
            raise ValueError(f"`{call}(ns_steps=...)` must be a whole number, got {leaf!r}")


def _lr_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """torch's ``_adjust_lr`` factor for a ``(A, B)`` matrix."""
    rows, cols = shape
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / max(cols, 1)))


def orthogonalize(x: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array, steps: jax.Array, eps: jax.Array) -> jax.Array:
    """torch's ``_zeropower_via_newtonschulz`` in ``x``'s dtype: ``x`` (its
    transpose when taller than wide) divided by ``max(||x||_F, eps)``, then
    ``steps`` iterations of ``X <- a X + (b A + c A^2) X`` with ``A = X X^T``."""
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = safe_divide(x, jnp.maximum(jnp.linalg.norm(x), eps), True)  # eps=0, zero gradient: 0, not NaN

    def dot(u, w):
        return jnp.matmul(u, w, precision=jax.lax.Precision.HIGHEST)

    def body(_, x):
        gram = dot(x, x.T)
        return a * x + dot(b * gram + c * dot(gram, gram), x)

    x = jax.lax.fori_loop(0, steps, body, x)
    return x.T if tall else x


def _direction(
    call: str,
    momentum: Hyper,
    nesterov: bool,
    ns_coefficients: Any,
    eps: Hyper,
    ns_steps: Hyper,
    adjust_lr_fn: str | None,
    mu_dtype: Any,
) -> optax.GradientTransformationExtraArgs:
    check_flag(call, "nesterov", nesterov)
    check_choice(call, "adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)
    if not isinstance(ns_coefficients, (tuple, list)) or len(ns_coefficients) != 3:
        raise ValueError(f"`{call}(ns_coefficients=...)` must be three values (a, b, c), got {ns_coefficients!r}")
    ns_a, ns_b, ns_c = ns_coefficients
    hp = Hypers(
        call, {**RULES, **LOCAL_RULES}, momentum=momentum, eps=eps, ns_a=ns_a, ns_b=ns_b, ns_c=ns_c, ns_steps=ns_steps
    )
    _check_ns_steps(call, ns_steps)
    mu_dtype = storage_dtype(call, mu_dtype)

    def init(params):
        _check_matrices(call, params)
        return ScaleByMuonState(zero_count(), full_like(params, 0.0, mu_dtype), hp.record(zero_count(), params))

    def update(updates, state, params=None, **extra_args):
        del extra_args
        _check_matrices(call, updates)
        h = hp.at(state.count, updates)

        @per_group
        def coef(v, cd):
            names = ("momentum", "ns_a", "ns_b", "ns_c", "eps")
            return (*(v[n].astype(cd) for n in names), v["ns_steps"].astype(jnp.int32))

        def leaf(v, g, buf):
            cd = compute_dtype(g)
            m, a, b, c, e, steps = coef(v, cd)
            g_c = g.astype(cd)
            # torch: buf.lerp_(g, 1 - momentum); nesterov: g.lerp(buf, momentum).
            buf_new = buf.astype(cd) + (1 - m) * (g_c - buf.astype(cd))
            direction = g_c + m * (buf_new - g_c) if nesterov else buf_new
            out = orthogonalize(direction, a, b, c, steps, e) * jnp.asarray(_lr_ratio(g.shape, adjust_lr_fn), cd)
            return out.astype(g.dtype), buf_new.astype(buf.dtype)

        out, mu = h.map(leaf, 2, updates, state.mu, params=params)
        return out, ScaleByMuonState(next_count(state.count), mu, h.record)

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_muon(
    momentum: Hyper = 0.95,
    *,
    nesterov: bool = True,
    ns_coefficients: tuple[Hyper, Hyper, Hyper] = NS_COEFFICIENTS,
    eps: Hyper = 1e-7,
    ns_steps: Hyper = 5,
    adjust_lr_fn: str | None = None,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """torch ``Muon``'s direction (without the learning rate and the decay):
    ``B_t = B_{t-1} + (1 - momentum)(g_t - B_{t-1})`` (``B_{-1} = 0``), the
    Nesterov blend ``g_t + momentum (B_t - g_t)`` (or ``B_t``),
    orthogonalized by Newton-Schulz (see :func:`fnopt.muon`) and multiplied by torch's
    shape factor for ``adjust_lr_fn``. Every leaf must be a real matrix.

    See :func:`fnopt.muon` for the arguments.
    """
    return _direction("scale_by_muon", momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, mu_dtype)


@friendly
def muon(
    learning_rate: Hyper = 1e-3,
    weight_decay: Hyper = 0.1,
    momentum: Hyper = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[Hyper, Hyper, Hyper] = NS_COEFFICIENTS,
    eps: Hyper = 1e-7,
    ns_steps: Hyper = 5,
    adjust_lr_fn: str | None = None,
    *,
    maximize: bool = False,
    mu_dtype: Any = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Muon, momentum orthogonalized by Newton-Schulz: torch ``Muon`` (2.13).

    For a matrix parameter ``p_t`` of shape ``(A, B)``, with ``g_t`` its
    gradient (negated with ``maximize``) and ``B_{-1} = 0``::

        B_t = momentum B_{t-1} + (1 - momentum) g_t
        M_t = (1 - momentum) g_t + momentum B_t      (nesterov)   or   B_t
        X_0 = M_t / max(||M_t||_F, eps)     (transposed when A > B)
        X_{k+1} = a X_k + (b G_k + c G_k^2) X_k,   G_k = X_k X_k^T,   k < ns_steps
        p_{t+1} = p_t - lr weight_decay p_t - lr s(A, B) O_t,   O_t = X_{ns_steps}

    with ``s(A, B) = sqrt(max(1, A / B))`` for ``adjust_lr_fn=None`` or
    ``"original"`` (Keller Jordan's) and ``0.2 sqrt(max(A, B))`` for
    ``"match_rms_adamw"`` (Moonshot's; AdamW's LR and decay carry over).
    torch reads ``A, B`` as ``(out, in)``: a Flax ``Dense`` kernel is
    ``(in, out)``, so ``"original"`` scales it by ``sqrt(max(1, in/out))``,
    exactly as torch would on the same array.

    **Only 2-D parameters**, as torch (``init`` raises ``ValueError``
    naming the leaf); give biases, norm scales and embeddings another
    optimizer in one line with :func:`muon_labels`::

        optax.partition({"muon": fnopt.muon(0.02), "adamw": fnopt.adamw(3e-4)}, fnopt.muon_labels)

    Complex parameters raise ``ValueError`` (torch's Muon has no complex
    form and neither has this one).

    **Dtype.** torch runs Newton-Schulz in bfloat16; fnopt runs it in the
    leaf's arithmetic dtype (float32 for float32 / bf16 params, float64
    under x64) at ``Precision.HIGHEST``, so the result does not depend on
    the backend's default matmul precision. torch's bf16 iteration differs
    from it by up to ~6% of the update's largest element (measured on small
    matrices; bf16 keeps 8 bits through five quintic iterations); with
    torch's iteration switched to float32 the two agree to float32 rounding.

    Differences from ``optax.contrib.muon``: Optax bias-corrects the
    momentum (``1 - beta^t``) and blends Nesterov with bias-corrected
    terms, divides by ``||M||_F + eps`` with ``eps=1e-8`` (torch:
    ``max(||M||_F, eps)``, ``eps=1e-7``), reads shapes as ``(in, out)``
    (``sqrt(max(1, B/A))`` for an ``(A, B)`` array, torch's ratio
    inverted), defaults to ``weight_decay=0`` and routes
    non-2-D leaves to Adam itself. Without momentum and on a square matrix
    the two give the same update up to rounding. torch's Muon has no
    ``maximize``; fnopt adds it (negates the gradient).

    Args:
        learning_rate: >= 0 (default 1e-3, torch's); float, traced array,
            schedule or group tree.
        weight_decay: decoupled decay, >= 0 (default 0.1, torch's),
            multiplied by the unadjusted ``lr``.
        momentum: in [0, 1).
        nesterov: Nesterov blend (static, default True).
        ns_coefficients: the quintic's ``(a, b, c)``; each a number, traced
            array, schedule or group tree (recorded as ``ns_a``, ``ns_b``,
            ``ns_c``).
        eps: >= 0, floor of the Frobenius norm.
        ns_steps: Newton-Schulz iterations, a whole number in [0, 100); it
            may be traced or scheduled (the loop is a ``fori_loop``).
        adjust_lr_fn: ``None`` / ``"original"`` or ``"match_rms_adamw"``.
        maximize: ascend the objective instead (static; fnopt's addition).
        mu_dtype: dtype of the momentum buffer (default: the params').
        mask: which leaves get weight decay, Optax's meaning.

    Returns:
        ``chain(scale_by_muon, add_decayed_weights, scale_by_learning_rate)``
        (a negation first with ``maximize``). ``update`` needs ``params``
        when ``weight_decay`` is not 0.

    References:
        Jordan et al., Muon: An optimizer for hidden layers in neural
        networks, 2024, https://kellerjordan.github.io/posts/muon/ ;
        Liu et al., Muon is Scalable for LLM Training, 2025,
        https://arxiv.org/abs/2502.16982

    Examples:
        >>> import jax, jax.numpy as jnp, optax, fnopt
        >>> params = {"w": jnp.asarray([[3.0, 0.0], [0.0, 1.0]])}
        >>> opt = fnopt.muon(0.1, momentum=0.0, weight_decay=0.0)
        >>> updates, state = opt.update(params, opt.init(params), params)
        >>> [[round(x, 3) for x in row] for row in updates["w"].tolist()]  # singular values 3 and 1 pushed toward 1
        [[-0.075, -0.0], [-0.0, -0.113]]

        Biases and other non-matrix parameters with AdamW:

        >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
        >>> opt = optax.partition({"muon": fnopt.muon(0.02), "adamw": fnopt.adamw(3e-4)}, fnopt.muon_labels)
        >>> state = opt.init(params)
        >>> sorted(k for k in fnopt.hyperparams(state) if k.endswith("learning_rate"))
        ['adamw/effective_learning_rate', 'adamw/learning_rate', 'muon/effective_learning_rate', 'muon/learning_rate']
    """
    call = "muon"
    hp = hypers(call, learning_rate=learning_rate, weight_decay=weight_decay)
    return with_group_check(hp, chain_stages(
        flip_sign(call, maximize),
        _direction(call, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, mu_dtype),
        decoupled_decay(call, weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    ))

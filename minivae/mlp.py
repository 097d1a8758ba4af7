"""A multilayer perceptron composed of the layers in :mod:`minivae.layers`.

An MLP with sizes ``(n_0, n_1, ..., n_L)`` is

.. math::  h_0 = x,\\quad a_l = h_{l-1} W_l + b_l,\\quad h_l = f(a_l)\\ (l < L),
           \\quad \\mathrm{out} = a_L

(no activation after the last affine layer). Its parameters are named
``"{prefix}.{l}.W"`` (shape (n_l, n_{l+1})) and ``"{prefix}.{l}.b"`` for
l = 0..L-1, in that order. The MLP owns no storage: ``forward`` and
``backward`` take the model's :class:`~minivae.params.ParamDict` so that all
parameters stay in one flat vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .layers import IN_PLACE, affine_backward, affine_forward, get_activation


class MLP:
    """Stateless description of an MLP: layer sizes, activation, parameter names."""

    def __init__(self, sizes: Sequence[int], activation: str = "relu", prefix: str = "mlp"):
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got sizes={sizes}")
        if any(s < 1 for s in sizes):
            raise ValueError(f"every layer size must be a positive integer, got sizes={sizes}")
        self.sizes = sizes
        self.activation = activation
        self._act_forward, self._act_backward = get_activation(activation)
        self._in_place = activation in IN_PLACE  # the forward may overwrite its input
        self.prefix = prefix
        self.names = [(f"{prefix}.{i}.W", f"{prefix}.{i}.b") for i in range(len(sizes) - 1)]

    @property
    def n_layers(self) -> int:
        """Number of affine layers."""
        return len(self.sizes) - 1

    def param_specs(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every parameter, in storage order."""
        specs = []
        for (w, b), n_in, n_out in zip(self.names, self.sizes[:-1], self.sizes[1:], strict=True):
            specs += [(w, (n_in, n_out)), (b, (n_out,))]
        return specs

    def init_params(self, params: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
        """Fill this MLP's entries of ``params`` in place.

        W and b are drawn from U(-1/sqrt(n_in), 1/sqrt(n_in)), the default of
        ``torch.nn.Linear``, so that a minivae model and a PyTorch model of the
        same shape start from the same distribution.
        """
        for (w, b), n_in in zip(self.names, self.sizes[:-1], strict=True):
            bound = 1.0 / np.sqrt(n_in)
            params[w][...] = rng.uniform(-bound, bound, size=params[w].shape)
            params[b][...] = rng.uniform(-bound, bound, size=params[b].shape)

    def forward(self, params: Mapping[str, np.ndarray], x: np.ndarray):
        """Return ``(out, cache)`` for a batch ``x`` of shape (N, sizes[0])."""
        caches = []
        h = x
        last = self.n_layers - 1
        for i, (w, b) in enumerate(self.names):
            a, affine_cache = affine_forward(h, params[w], params[b])
            if i < last:  # (a, the affine output, is ours: an in-place activation may reuse it)
                h, act_cache = (self._act_forward(a, out=a) if self._in_place
                                else self._act_forward(a))
            else:
                h, act_cache = a, None
            caches.append((affine_cache, act_cache))
        return h, caches

    def backward(
        self,
        params: Mapping[str, np.ndarray],
        dout: np.ndarray,
        caches,
        grads: Mapping[str, np.ndarray] | None,
        *,
        need_dx: bool = True,
    ) -> np.ndarray | None:
        """Backpropagate ``dout = dL/d out``.

        Writes (overwrites, never adds to) ``grads[name]`` for every parameter
        of this MLP and returns ``dL/dx`` (or ``None`` when ``need_dx`` is
        False, which saves the first layer's input-gradient product). With
        ``grads=None`` no parameter gradient is computed, only ``dL/dx``: what
        optimizing the network's *input* with its weights held fixed needs.
        """
        del params  # the caches hold the weights the backward pass needs
        dh = dout
        for i in reversed(range(self.n_layers)):
            affine_cache, act_cache = caches[i]
            da = dh if act_cache is None else self._act_backward(dh, act_cache)
            w, b = self.names[i]
            dh, _, _ = affine_backward(
                da, affine_cache, need_dx=(i > 0 or need_dx), need_params=grads is not None,
                dW_out=None if grads is None else grads[w],
                db_out=None if grads is None else grads[b])
        return dh

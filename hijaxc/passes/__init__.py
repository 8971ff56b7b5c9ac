"""The rewrite passes, one file each, run in this order by ``api.rewrite``:

1. ``lambda_def``      a compiled lambda becomes a ``def``
2. ``callees``         calls that may enter the user's other functions go through ``__hx.callee``
3. ``super_call``      zero-argument ``super()`` -> ``super(__class__, self)``
4. ``private_names``   ``self.__n`` -> ``self._Cls__n``, as the class body would have mangled it
5. ``transforms``      ``jax.lax.scan`` & co. -> the runtime's state-threading versions
6. ``foreign``         a converted callee's own global / closure state -> the trace's copy
7. ``mutations``       ``v[i] = x``, ``v[i] += x`` -> ``__hx.setitem(..., 'file:line')``
8. ``declarations``    threaded names leave ``global`` / ``nonlocal`` declarations
9. ``threaded_params`` threaded free names become keyword-only parameters

Each pass is a ``transformer.Transformer`` (or a function for a one-node change) with
``transform(node, ctx)``; its docstring shows the code it takes and the code it makes.  The order
matters where noted in a pass's docstring: ``callees`` decides on the user's own expressions (before
``private_names`` and ``transforms`` change them), ``transforms`` replaces whole attribute chains
before ``foreign`` wraps their roots, and ``mutations`` works on the finished expressions.
"""

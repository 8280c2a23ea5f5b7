"""cgroup v1 backend: one hierarchy per controller, one module per controller.

Each controller module provides ``NAME``, ``needed(res)``, ``apply(path, res)`` and
``stats(path, out)``; :mod:`.manager` drives them over the hierarchies it manages.
"""

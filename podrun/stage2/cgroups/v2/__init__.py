"""cgroup v2 backend: one unified hierarchy; controllers are enabled top-down through
``cgroup.subtree_control``; one module per controller."""

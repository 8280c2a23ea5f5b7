"""stage1: the pod sandbox — namespaces, networking, the pod init, stop/gc/enter entrypoints."""

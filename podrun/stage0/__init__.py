"""stage0: the ``podrun`` command line, pod lifecycle, trust store and fetching."""

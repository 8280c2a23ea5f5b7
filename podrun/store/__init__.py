"""store: the content-addressed image store (blobs, sqlite index, rendered trees, locks)."""

"""convert: Docker/OCI images to ACIs (registry v2, OCI layout, docker-archive)."""

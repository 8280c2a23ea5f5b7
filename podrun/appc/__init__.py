"""appc: the App Container types, image/pod manifests, JSON Schemas and the ACI format."""

"""discovery: appc meta discovery, image reference parsing, HTTP session and auth."""

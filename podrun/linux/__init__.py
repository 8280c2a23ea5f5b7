"""linux: thin cffi bindings for the syscalls Python lacks. No policy lives here."""

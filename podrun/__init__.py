"""podrun: a daemonless pod runtime for Linux in the rkt/appc tradition.

The package is split by stage (see ../shared/DESIGN.md): ``appc`` (the appc types
and ACI format), ``store`` (the content-addressed image store), ``discovery``,
``convert``, ``stage0`` (the CLI and pod lifecycle), ``stage1`` (pod sandbox and
init), ``stage2`` (per-app isolation) and ``linux`` (thin syscall bindings).
"""

__version__ = "0.1.0"
APPC_VERSION = "0.8.11"

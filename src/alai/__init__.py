"""alai: control plane, CLI and data-plane daemon.

Kept empty on purpose: `alai --version` must not pay for importing anything.
"""

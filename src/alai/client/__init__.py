"""The HTTP client of the control plane, shared by the CLI and the node daemon."""

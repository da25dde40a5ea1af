"""The `alai` command. Never imports `alai.server` at module level (see the import-boundary test)."""

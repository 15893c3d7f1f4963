"""The plugin system: hook specifications, interfaces and the per-tenant manager."""

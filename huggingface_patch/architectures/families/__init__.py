"""The built-in families, one adapter module each; every module here is imported by the registry."""

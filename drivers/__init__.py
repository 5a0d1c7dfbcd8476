"""Device profiles as data: one YAML file per device family (see README.md)."""

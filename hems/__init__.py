"""hems: home energy management daemon."""

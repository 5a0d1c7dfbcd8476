"""Device adapters: protocol engines that turn the outside world into capabilities."""

"""The registered architectures, one per module; `ranker.registry.get(name)` imports them."""

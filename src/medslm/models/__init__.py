"""Models: presets, artifacts and the resolver from a reference to a loadable model."""

"""Models: the catalog, where weights come from, and what they need to run."""

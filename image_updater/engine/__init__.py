"""The engine: reconcile (registry → policy → values → git) and promote."""

"""Data files shipped with the hub: the default measure catalogue (`measures.json`)."""

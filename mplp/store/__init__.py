"""The results store: run directories, manifests and checkpoint records, locks, the result
cache; reads only data.  Depends on ``mplp.core`` (configs) and ``mplp.paths``."""

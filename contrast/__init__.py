"""The shared core: what more than one component needs (derivations, logging, commands, files)."""

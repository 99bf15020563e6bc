"""The Initializer: runs in every confidential pod and sets up its secure persistent volume."""

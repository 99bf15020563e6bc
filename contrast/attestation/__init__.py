"""Attestation: issuers produce evidence inside a TEE, validators check it against the manifest.

``base`` holds the platform-independent interface, ``simulated`` the development TEE and
``platforms`` picks the issuer of this machine and the validators a manifest trusts.
"""

"""AMD SEV-SNP attestation: parse and verify reports, issue them in real guests.

- ``report.py``: the attestation report structure (pure parsing).
- ``der.py``, ``certchain.py``: AMD's ARK -> ASK -> VCEK chain with pinned roots.
- ``verify.py``: every check, as a pure function of bytes, time and reference values.
- ``referencevalues.py``: what a trusted guest looks like, and its JSON form.
- ``evidence.py``: evidence = report || the host's certificate table.
- ``kds.py``: VCEKs and chains from AMD's key distribution service, cached.
- ``validator.py``: :class:`SnpValidator`, evidence in, host data out.
- ``issuer.py``: :class:`SnpIssuer`, reports from configfs-tsm or /dev/sev-guest.
"""

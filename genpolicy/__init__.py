"""YAML in, runtime policies and manifest entries out: the engine behind ``contrast generate``.

``kuberesource`` decides what is injected into a pod (pure, idempotent transformations of
plain data), ``policy`` turns the injected pod into a Rego policy for the Kata agent,
``yamltext`` rewrites the user's YAML text with the smallest edits that express the change,
and ``generate`` ties them together for one YAML stream.
"""

"""The local stack: fake Azure endpoints speaking the real wire protocols, and real Kubernetes.

Kept out of the deployed package; nothing under `rotation/` imports it.
"""

"""Client-side helpers: an authenticated HTTP session from a kubeconfig (used by the CLI and the tests)."""

from __future__ import annotations

import base64
from pathlib import Path

import requests
import yaml


def session_for(kubeconfig: Path) -> tuple[str, requests.Session]:
    """A requests session authenticated as the kubeconfig's current context says (token or client cert)."""
    doc = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])
    session = requests.Session()
    if user.get("token"):
        session.headers["Authorization"] = f"Bearer {user['token']}"
    if user.get("client-certificate") and user.get("client-key"):
        session.cert = (user["client-certificate"], user["client-key"])
    if cluster.get("certificate-authority-data"):
        ca = kubeconfig.parent / f".{kubeconfig.name}.ca.crt"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        session.verify = str(ca)
    elif cluster.get("certificate-authority"):
        session.verify = cluster["certificate-authority"]
    elif cluster.get("insecure-skip-tls-verify"):
        session.verify = False
    return cluster["server"], session

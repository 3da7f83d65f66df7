"""Optional TLS for TCP connections, configured as Ray's ``RAY_USE_TLS``.

    EMBER_USE_TLS=1
    EMBER_TLS_SERVER_CERT=/path/cert.pem   this process's certificate (it serves and dials with it)
    EMBER_TLS_SERVER_KEY=/path/key.pem     its private key
    EMBER_TLS_CA_CERT=/path/ca.pem         the CA that signed every node's certificate

Why: the cluster token (:mod:`.auth`) travels in clear over TCP, and so does
every object. Between machines on a network that is not trusted, TLS
encrypts both and proves each end holds a certificate from the cluster's CA
(mutual TLS, as Ray's gRPC channels do). Unix sockets never leave the
machine, so they stay plain.

Certificates are checked against the CA, but not against the host name or IP
dialled (``check_hostname`` off): nodes are dialled by the IPs they report,
which certificates made for a cluster often do not list. Holding a
certificate from the CA is what admits a peer, with the token on top.

The standard :mod:`ssl` module does the work; contexts are built once per
process.
"""
from __future__ import annotations

import functools
import os
import ssl

ENV_USE_TLS = "EMBER_USE_TLS"
ENV_CERT = "EMBER_TLS_SERVER_CERT"
ENV_KEY = "EMBER_TLS_SERVER_KEY"
ENV_CA = "EMBER_TLS_CA_CERT"


def enabled() -> bool:
    return os.environ.get(ENV_USE_TLS, "").strip().lower() in ("1", "true", "yes", "on")


def _paths() -> tuple[str, str, str]:
    values = [os.environ.get(name, "") for name in (ENV_CERT, ENV_KEY, ENV_CA)]
    missing = [name for name, v in zip((ENV_CERT, ENV_KEY, ENV_CA), values) if not v]
    if missing:
        raise ValueError(f"{ENV_USE_TLS}=1 needs {', '.join(missing)} set to the paths of "
                         "this node's certificate, its key and the cluster's CA certificate.")
    for name, path in zip((ENV_CERT, ENV_KEY, ENV_CA), values):
        if not os.path.isfile(path):
            raise ValueError(f"{name}={path!r}: no such file.")
    return values[0], values[1], values[2]


@functools.lru_cache(maxsize=None)
def server_context() -> ssl.SSLContext:
    cert, key, ca = _paths()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@functools.lru_cache(maxsize=None)
def client_context() -> ssl.SSLContext:
    cert, key, ca = _paths()
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx

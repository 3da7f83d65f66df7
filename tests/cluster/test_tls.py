"""TLS between nodes (``EMBER_USE_TLS=1``), with certificates the test makes.

Two nodes on one machine that copy objects over TCP, as on two machines
(``EMBER_OBJECT_TRANSFER_SAME_HOST=0``): the GCS connections and the object
transfers all go through TLS. A client without TLS, or with a certificate
from another CA, is not served.
"""
from __future__ import annotations

import os
import socket
import ssl

import numpy as np
import pytest

import ember
from ember.cluster_utils import Cluster
from ember.rpc import auth, tls
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from helpers import make_tls_files


@pytest.fixture
def tls_cluster(tmp_path, monkeypatch):
    ember.shutdown()
    settings = make_tls_files(tmp_path)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EMBER_OBJECT_TRANSFER_SAME_HOST", "0")
    tls.server_context.cache_clear()
    tls.client_context.cache_clear()
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1)
        second = cluster.add_node(num_cpus=1, resources={"second": 1})
        ember.init(address=cluster.address)
        yield cluster, head, second, settings, tmp_path
    finally:
        ember.shutdown()
        cluster.shutdown()
        tls.server_context.cache_clear()
        tls.client_context.cache_clear()



def test_nodes_talk_over_tls_and_plain_clients_are_not_served(tls_cluster):
    cluster, head, second, settings, tmp_path = tls_cluster

    @ember.remote(resources={"second": 1})
    def make(n):
        return np.arange(n, dtype=np.int64)

    @ember.remote(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ember.get_runtime_context().get_node_id(), soft=False))
    def total(arr):
        return int(arr.sum())

    arr = ember.get(make.remote(1_000_000))  # 8 MB from the second node, over TLS
    assert arr[-1] == 999_999
    assert ember.get(total.remote(ember.put(np.ones(500_000, dtype=np.int64)))) == 500_000

    host, _, port = cluster.address.rpartition(":")
    token = auth.read_token_file(auth.token_path(head.session_dir)).encode()
    # Plain TCP: the server expects a TLS ClientHello and never speaks ember.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(auth.client_preamble(token))
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert not received.startswith(b"EMBR")
    # TLS with the cluster's CA and a certificate it signed: served.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with tls.client_context().wrap_socket(raw) as sock:
            sock.sendall(auth.client_preamble(token))
            assert sock.recv(5) == b"EMBR\x00"
    # TLS with a certificate from another CA: the server refuses the TLS handshake.
    os.makedirs(tmp_path / "other")
    other = make_tls_files(tmp_path / "other")
    stranger = ssl.create_default_context(cafile=settings["EMBER_TLS_CA_CERT"])
    stranger.check_hostname = False
    stranger.load_cert_chain(other["EMBER_TLS_SERVER_CERT"], other["EMBER_TLS_SERVER_KEY"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with stranger.wrap_socket(raw) as sock:
                sock.sendall(auth.client_preamble(token))
                if not sock.recv(5):
                    raise ConnectionResetError("closed by the server")
    assert ember.get(make.remote(10))[-1] == 9

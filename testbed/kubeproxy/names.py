"""Chain names hashed exactly as kube-proxy's iptables proxier hashes them.

Matching names let a user put the lab's `iptables-save` next to a real node's.
"""

from __future__ import annotations

import base64
import functools
import hashlib


@functools.lru_cache(maxsize=65536)
def _hash16(text: str) -> str:
    # the first 10 bytes are exactly the first 16 base32 characters of the whole digest
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest[:10]).decode()


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """portProtoHash: base32(sha256(ns/svc:port + proto))[:16]."""
    return _hash16(service_port_name + protocol.lower())


def svc_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-SVC-" + port_proto_hash(service_port_name, protocol)


def svl_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-SVL-" + port_proto_hash(service_port_name, protocol)


def ext_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-EXT-" + port_proto_hash(service_port_name, protocol)


def fw_chain(service_port_name: str, protocol: str) -> str:
    return "KUBE-FW-" + port_proto_hash(service_port_name, protocol)


def sep_chain(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-: the endpoint 'ip:port' joins the hash input."""
    return "KUBE-SEP-" + _hash16(service_port_name + protocol.lower() + endpoint)

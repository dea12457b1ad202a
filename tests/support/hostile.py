"""Malformed and hostile scenario files made at test time (too big or too odd to commit).

Each entry is (file name, bytes or a writer, the text its error must contain). The
writer form makes the 50 MB files in the test's own tmp directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testbed.core.yamlsrc import MAX_DOCUMENTS, MAX_NODES

LAB = """apiVersion: testbed/v1alpha1
kind: Lab
metadata: {{name: {name}}}
spec:
  nodes: {nodes}
  clients: [{{name: {client}, ip: 203.0.113.10}}]
{extra}"""

WEB = """---
apiVersion: v1
kind: Service
metadata: {{name: {service}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: {port_name}, port: {port}, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, ports: [{{containerPort: 8080}}]}}]}}
"""

BIG = 50 * 1024 * 1024
PROBE = "  probes: [{{name: p, from: client, to: {{service: web}}, count: {count}}}]\n"
NODE_LIST = "[" + ", ".join(f"{{name: n{i}}}" for i in range(1001)) + "]"


def scenario(
    name: str = "bad",
    nodes: object = 2,
    client: str = "client",
    extra: str = "",
    service: str = "web",
    port_name: str = "http",
    port: object = 80,
    replicas: object = 2,
) -> str:
    lab = LAB.format(name=name, nodes=nodes, client=client, extra=extra)
    return lab + WEB.format(service=service, port_name=port_name, port=port, replicas=replicas)


def _laughs(container: str) -> str:
    """Nine levels of nine aliases each, inside the Lab's spec: 9**9 values once expanded."""
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        prev = f"*a{level - 1}"
        if container == "list":
            items = ", ".join([prev] * 9)
            lines.append(f"  a{level}: &a{level} [{items}]")
        else:
            items = ", ".join(f"k{i}: {prev}" for i in range(9))
            lines.append(f"  a{level}: &a{level} {{{items}}}")
    return "\n".join(lines) + "\n"


def _deep(opening: str, closing: str, levels: int) -> str:
    return "---\nx: " + opening * levels + "1" + closing * levels + "\n"


def _deep_block(levels: int) -> str:
    keys = "".join("  " * i + f"k{i}:\n" for i in range(levels))
    return "---\n" + keys + "  " * levels + "v\n"


def _sparse(path: Path) -> None:
    with path.open("wb") as handle:
        handle.truncate(BIG)


def _real(path: Path) -> None:
    block = (scenario() + "# " + "x" * 1000 + "\n").encode()
    with path.open("wb") as handle:
        written = 0
        while written < BIG:
            handle.write(block)
            written += len(block)


@dataclass(frozen=True)
class Hostile:
    name: str
    content: bytes | Callable[[Path], None]
    expect: str

    def write(self, directory: Path) -> Path:
        path = directory / self.name
        if isinstance(self.content, bytes):
            path.write_bytes(self.content)
        else:
            self.content(path)
        return path


def _t(text: str) -> bytes:
    return text.encode()


TOO_MANY = f"more than {MAX_NODES} values"
TOO_MANY_DOCS = f"more than {MAX_DOCUMENTS} documents"

HOSTILE = [
    # huge counts
    Hostile("huge-node-count.yaml", _t(scenario(nodes=10**12)), "spec.nodes: 1000000000000 nodes"),
    Hostile("huge-replicas.yaml", _t(scenario(replicas=10**9)), "spec.replicas: 1000000000"),
    Hostile("huge-probe-count.yaml", _t(scenario(extra=PROBE.format(count=10**12))), "count"),
    Hostile("huge-port.yaml", _t(scenario(port=10**40)), "does not fit in 64 bits"),
    Hostile("node-list-1001.yaml", _t(scenario(nodes=NODE_LIST)), "1001 nodes: must be 1-1000"),
    Hostile("infinite-nodes.yaml", _t(scenario(nodes=".inf")), "not the number inf"),
    # billion laughs: 9**9 values once the aliases are expanded
    Hostile("billion-laughs-in-spec.yaml", _t(scenario(extra=_laughs("list"))), TOO_MANY),
    Hostile("billion-laughs-mappings.yaml", _t(scenario(extra=_laughs("map"))), TOO_MANY),
    # deep nesting
    Hostile("deep-flow-lists.yaml", _t(scenario() + _deep("[", "]", 10_000)), "nesting depth"),
    Hostile("deep-flow-maps.yaml", _t(scenario() + _deep("{a: ", "}", 100_000)), "deeper than 64"),
    Hostile("deep-block-maps.yaml", _t(scenario() + _deep_block(200)), "deeper than 64"),
    # not UTF-8, or not text
    Hostile("latin1-name.yaml", scenario(client="cli\xe9nt").encode("latin-1"), "not UTF-8"),
    Hostile("surrogate-bytes.yaml", _t(scenario()).replace(b"web", b"w\xed\xa0\x80b", 1), "UTF-8"),
    Hostile("nul-byte.yaml", _t(scenario()).replace(b"Lab", b"L\x00ab", 1), "control characters"),
    Hostile("utf16-no-bom.yaml", scenario().encode("utf-16-le"), "control characters"),
    # size: refused from stat() alone, before a byte is read
    Hostile("fifty-mb-sparse.yaml", _sparse, "file is 52428800 bytes; the limit is 4194304"),
    Hostile("fifty-mb-real.yaml", _real, "the limit is 4194304"),
    Hostile("many-documents.yaml", _t(scenario() + "---\n" * 1_000_000), TOO_MANY_DOCS),
    Hostile("many-scalars.yaml", _t(scenario() + "--- 1\n" * 600_000), TOO_MANY_DOCS),
    Hostile("flat-list.yaml", _t(scenario() + "---\nx: [" + "1," * 1_500_000 + "]\n"), TOO_MANY),
    Hostile("block-list.yaml", _t(scenario() + "---\nx:\n" + "- 1\n" * 1_000_000), TOO_MANY),
    # names over the limits: client and container-port names become interface-like names
    # of at most 15 characters; node names are DNS subdomains, cut at 200 for namespaces
    Hostile(
        "node-name-243.yaml",
        _t(scenario(nodes=f"[{{name: {'.'.join(['n' * 60] * 4)}}}]")),
        "is 243 characters; the lab's limit is 200",
    ),
    Hostile("client-name-16.yaml", _t(scenario(client="c" * 16)), "the limit is 15"),
    Hostile(
        "container-port-name-16.yaml",
        _t(
            scenario().replace(
                "{containerPort: 8080}", f"{{name: {'p' * 16}, containerPort: 8080}}"
            )
        ),
        "at most 15",
    ),
    Hostile("service-name-64.yaml", _t(scenario(service="s" * 64)), "the limit is 63"),
    Hostile("lab-name-64.yaml", _t(scenario(name="l" * 64)), "the limit is 63"),
    # odd text must still give one short line
    Hostile("bidi-client-name.yaml", _t(scenario(client='"cl\\u202eient"')), "client name"),
    Hostile("newline-in-name.yaml", _t(scenario(name='"a\\nb"')), "'a\\nb' is not a valid"),
    Hostile("three-mb-name.yaml", _t(scenario(name="n" * (3 << 20))), "3145728 characters"),
    Hostile("long-key.yaml", _t(scenario(extra="  " + "k" * 100_000 + ": 1\n")), "invalid YAML"),
    Hostile(
        "binary-tag.yaml", _t(scenario(extra="  proxyMode: !!binary aXB0YWJsZXM=\n")), "proxyMode"
    ),
    Hostile(
        "set-tag.yaml", _t(scenario(extra="  proxyMode: !!set {a, b}\n")), "unsupported YAML tag"
    ),
]

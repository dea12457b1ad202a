"""Rule diffs on real dumps: tests/data/upstream/dumps/ holds, per node of the default
scenario, what the kernel printed for our rendered rules (`*.rendered`, via `testbed
rules`) and for the real kube-proxy (`*.vX.Y.Z`) run against a real API server holding
the same Service and EndpointSlice, both with nodePortAddresses [primary]
(`*.rendered-unset`: our rendering without it, kube-proxy's default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.kubeproxy import rulediff

DUMPS = Path(__file__).resolve().parent.parent / "data" / "upstream" / "dumps"
NODES = ("node-1", "node-2", "node-3")


def _dump(name: str) -> str:
    return (DUMPS / name).read_text()


@pytest.mark.parametrize("node", NODES)
def test_real_kube_proxy_iptables_matches_our_rendering(node):
    d = rulediff.diff(
        node,
        "iptables",
        _dump(f"default.iptables.{node}.rendered"),
        _dump(f"default.iptables.{node}.v1.37.2"),
    )
    assert d.identical, d.text()
    assert d.header.startswith(f"{node} (iptables): identical")


def test_nftables_v1_35_matches_and_v1_36_plus_is_restructured():
    ours = _dump("default.nftables.node-1.rendered")
    same = rulediff.diff("node-1", "nftables", ours, _dump("default.nftables.node-1.v1.35.4"))
    assert same.identical, same.text()
    new = rulediff.diff("node-1", "nftables", ours, _dump("default.nftables.node-1.v1.37.2"))
    assert not new.identical
    added = {x for x in new.lines if x.startswith("+")}
    assert "+set hairpin-connections {" in added  # 1.36+: hairpin masquerade by set lookup
    assert any("dnat ip to numgen random mod 4 map" in x for x in added)  # no endpoint chains


def test_v1_33_masquerade_rule_names_the_port():
    d = rulediff.diff(
        "node-1",
        "nftables",
        _dump("default.nftables.node-1.rendered"),
        _dump("default.nftables.node-1.v1.33.13"),
    )
    assert [x for x in d.lines if x[:1] in "+-" and x[:3] not in ("+++", "---")] == [
        "-  ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
        "+  ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
    ]


def test_upstream_facts_are_normalised_away():
    lines = rulediff.normalise_iptables(_dump("default.iptables.node-1.v1.37.2"))
    text = "\n".join(lines)
    assert "KUBE-PROXY-CANARY" not in text and "*mangle" not in text
    assert "nfacct" not in text
    assert "default/kubernetes" not in text and "NPX46M4PTMTKRN6Y" not in text
    assert "KUBE-SEP-N7QN6K4R7NFPRPC7" not in text  # the API server's endpoint chain
    assert "[0:0]" not in text and ":INPUT" not in text
    assert "-A INPUT -j KUBE-FIREWALL" in lines  # built-in chains' jumps stay
    nft = "\n".join(rulediff.normalise_nft(_dump("default.nftables.node-1.v1.37.2")))
    assert "default/kubernetes" not in nft and "10.96.0.1 " not in nft + " "
    assert "element 10.96.0.1\n" not in nft + "\n"
    assert "ip6" not in nft  # the dual-stack half of `nft list ruleset`
    assert "element 10.96.0.10" in nft


def test_counters_order_of_chains_and_elements_do_not_count():
    save = _dump("default.iptables.node-1.rendered")
    lines = save.splitlines()
    nat = lines.index("*nat")
    decl = [i for i, line in enumerate(lines) if line.startswith(":KUBE-") and i > nat]
    shuffled = list(lines)
    shuffled[decl[0]], shuffled[decl[-1]] = lines[decl[-1]], lines[decl[0]]
    shuffled = [x.replace("[0:0]", "[7:420]") for x in shuffled]
    assert rulediff.diff("n", "iptables", save, "\n".join(shuffled)).identical
    listing = _dump("default.nftables.node-1.v1.37.2")
    hairpin = (
        "10.244.1.2 . 10.244.1.2 . tcp . 8080,\n\t\t\t     10.244.1.3 . 10.244.1.3 . tcp . 8080"
    )
    assert hairpin in listing
    swapped = listing.replace(
        hairpin,
        "10.244.1.3 . 10.244.1.3 . tcp . 8080,\n\t\t\t     10.244.1.2 . 10.244.1.2 . tcp . 8080",
    )
    block = "\tchain reject-chain {\n"
    start = swapped.index(block)
    end = swapped.index("\t}\n", start) + 4
    moved = swapped[:start] + swapped[end:].replace(
        "}\ntable ip6", "\n" + swapped[start:end] + "}\ntable ip6", 1
    )
    assert moved != listing
    assert rulediff.diff("n", "nftables", listing, moved).identical


def test_rule_order_inside_a_chain_counts_but_not_in_dispatch_chains():
    save = _dump("default.iptables.node-1.rendered").splitlines()
    svc = [i for i, x in enumerate(save) if x.startswith("-A KUBE-SVC-")]
    swapped = list(save)
    swapped[svc[1]], swapped[svc[2]] = save[svc[2]], save[svc[1]]
    d = rulediff.diff("node-1", "iptables", "\n".join(save), "\n".join(swapped))
    assert not d.identical  # probabilities are conditional on the rules before them
    assert d.header == "node-1 (iptables): 1 line(s) only in rendered, 1 only in kernel"
    nodeports = [i for i, x in enumerate(save) if x.startswith("-A KUBE-SERVICES")]
    assert len(nodeports) >= 2
    moved = list(save)
    last = moved.pop(nodeports[-1])  # "must be the last rule": moving it shows
    moved.insert(nodeports[0], last)
    assert not rulediff.diff("n", "iptables", "\n".join(save), "\n".join(moved)).identical


def test_a_different_endpoint_shows_as_a_different_chain_name():
    ours = _dump("default.iptables.node-1.rendered")
    theirs = ours.replace("10.244.3.2", "10.244.3.9")
    d = rulediff.diff("node-1", "iptables", ours, theirs)
    assert not d.identical
    assert any("10.244.3.9" in x for x in d.lines)


def test_report_says_which_nodes_differ():
    ours = _dump("default.iptables.node-1.rendered")
    same = rulediff.diff("node-1", "iptables", ours, ours)
    other = rulediff.diff("node-2", "iptables", ours, ours.replace("0.25000", "0.20000"))
    text = rulediff.report([same, other])
    assert text.splitlines()[0].startswith("node-1 (iptables): identical")
    assert text.endswith("differ: node-2\n")
    assert rulediff.report([same]).endswith("no difference\n")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown proxy mode 'ipvs'"):
        rulediff.normalise("", "ipvs")


def test_without_node_port_addresses_the_renderer_models_kube_proxys_default():
    d = rulediff.diff(
        "node-1",
        "iptables",
        _dump("default.iptables.node-1.rendered-unset"),
        _dump("default.iptables.node-1.v1.37.2"),  # run with nodePortAddresses [primary]
    )
    changed = [x for x in d.lines if x[:1] in "+-" and x[:3] not in ("+++", "---")]
    assert len(changed) == 3
    assert "localnet" in changed[0]  # route_localnet's guard: no localhost NodePorts now
    assert "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS" in changed[1]
    assert changed[2].startswith("+-A KUBE-SERVICES -d 172.18.0.11/32")

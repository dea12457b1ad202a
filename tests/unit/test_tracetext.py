"""Reading the kernel's rule trace, on output captured from real labs (tests/data/trace).

The captures, by `testbed trace` on `local-no-local-endpoint` in iptables(-nft) and
nftables mode: one SYN from the client to the Local NodePort 30081 of node-1 (its pod
web-0 is there) and of node-2 (no pod), and to the Cluster NodePort 30080 of node-2
(forwarded to web-0 on node-1: both nodes' monitors). For the filter, a whole curl
exchange to the Cluster NodePort of node-1 traced by source port (SYN, ACKs, data,
FIN: the kernel reuses trace ids across them).
"""

from __future__ import annotations

from pathlib import Path

from testbed.kernel import tracetext

DATA = Path(__file__).resolve().parents[1] / "data" / "trace"


SPORTS = {  # the source port of each capture's marked packet
    "nft-web-local-via-node-1": 43691,
    "nft-web-local-via-node-2": 20435,
    "nft-web-cluster-via-node-2": 23755,
    "xtables-web-local-via-node-1": 29175,
    "xtables-web-local-via-node-2": 39371,
    "xtables-web-cluster-via-node-2": 60038,
    "xtables-cluster-nodeport": 41234,
}


def parse(name: str) -> list[tracetext.Hook]:
    text = (DATA / f"{name}.txt").read_text()
    parse = tracetext.parse_nft if name.startswith("nft") else tracetext.parse_xtables
    return parse(text)


def read(name: str, sport: int | None = None) -> list[tracetext.Hook]:
    sport = sport or next(v for k, v in SPORTS.items() if name.startswith(k))
    return tracetext.marked(parse(name), sport)


def paths(hooks) -> list[str]:
    return [h["path"] for h in tracetext.summary(hooks)["hooks"]]


def test_iptables_local_with_a_local_pod_ends_in_the_endpoint_s_dnat() -> None:
    hooks = read("xtables-web-local-via-node-1-at-node-1")
    assert paths(hooks)[0] == (
        "nat PREROUTING: KUBE-SERVICES -> KUBE-NODEPORTS -> KUBE-EXT-V7ZMVOA2AOW6ATRL -> "
        "KUBE-SVL-V7ZMVOA2AOW6ATRL -> KUBE-SEP-FEMFP27ZXWECPQLF: DNAT to 10.244.1.2:8080"
    )
    assert tracetext.summary(hooks)["verdict"] == "DNAT to 10.244.1.2:8080"


def test_iptables_local_without_a_local_pod_ends_in_the_drop() -> None:
    hooks = read("xtables-web-local-via-node-2-at-node-2")
    got = tracetext.summary(hooks)
    assert got["verdict"] == (
        "dropped in KUBE-EXTERNAL-SERVICES: default/web-local:http has no local endpoints"
    )
    assert paths(hooks)[-1].startswith("filter INPUT: ")
    assert paths(hooks)[-1].endswith(
        "-> KUBE-EXTERNAL-SERVICES: DROP (default/web-local:http has no local endpoints)"
    )
    # no KUBE-SVL / KUBE-SEP: the NodePort chain had nowhere to send it
    assert not any("KUBE-SEP" in p for p in paths(hooks))


def test_nftables_local_paths_in_both_directions() -> None:
    local = read("nft-web-local-via-node-1-at-node-1")
    nat = next(p for p in paths(local) if p.startswith("kube-proxy nat-prerouting"))
    assert nat == (
        "kube-proxy nat-prerouting: services -> external-MW3VTDQO-default/web-local/tcp/http -> "
        "local-MW3VTDQO-default/web-local/tcp/http -> "
        "endpoint-FTUCYJ2V-default/web-local/tcp/http__10.244.1.2/8080: DNAT to 10.244.1.2:8080"
    )
    dropped = read("nft-web-local-via-node-2-at-node-2")
    assert tracetext.summary(dropped)["verdict"] == (
        "dropped in nodeport-endpoints-check: @no-endpoint-nodeports"
    )


def test_our_own_marking_rules_are_left_out() -> None:
    for name in ("nft-web-local-via-node-1-at-node-1", "xtables-web-local-via-node-1-at-node-1"):
        raw = (DATA / f"{name}.txt").read_text()
        assert tracetext.OUR_TABLE in raw or "-j TRACE" in raw  # the capture has them
        hooks = read(name)
        assert hooks and all(h.table != tracetext.OUR_TABLE for h in hooks)
        text = " ".join(p for p in paths(hooks))
        assert "TRACE" not in text and "nftrace" not in text and "raw PREROUTING" not in text


def test_only_the_marked_packet_is_kept_though_trace_ids_are_reused() -> None:
    text = (DATA / "xtables-cluster-nodeport-node-1.txt").read_text()  # traced by port
    every = tracetext.parse_xtables(text)
    assert len({h.trace_id for h in every}) < len(every)  # ids do repeat
    hooks = tracetext.marked(every, 41234)
    assert {h.packet["id"] for h in hooks} == {"45843"}
    assert all(h.packet["flags"] == "SYN" for h in hooks)
    got = tracetext.summary(hooks)
    assert got["verdict"] == "DNAT to 10.244.1.2:8080, MASQUERADE"
    assert "KUBE-MARK-MASQ" in paths(hooks)[0]  # Cluster: marked for masquerade at entry


def test_after_dnat_the_packet_is_followed_by_its_ip_id() -> None:
    hooks = read("xtables-web-local-via-node-1-at-node-1")
    assert [h.packet["dst"] for h in hooks][-1] == "10.244.1.2"
    assert hooks[-1].packet["dport"] == "8080"


def test_cluster_through_a_pod_less_node_in_both_modes() -> None:
    """node-2 DNATs and masquerades; node-1 sees the same packet (its IP id) pass on to
    web-0 with another source port, and rewrites nothing."""
    for mode, entry_chain in (("xtables", "KUBE-MARK-MASQ"), ("nft", "mark-for-masquerade")):
        sport = SPORTS[f"{mode}-web-cluster-via-node-2"]
        entry = parse(f"{mode}-web-cluster-via-node-2-at-node-2")
        ipid = tracetext.marked_id(entry, sport)
        got = tracetext.summary(tracetext.marked(entry, sport, ipid))
        assert got["verdict"] == "DNAT to 10.244.1.2:8080, MASQUERADE"
        assert entry_chain in " ".join(h["path"] for h in got["hooks"])
        behind = tracetext.marked(parse(f"{mode}-web-cluster-via-node-2-at-node-1"), sport, ipid)
        assert behind and all(h.packet["sport"] != str(sport) for h in behind)
        assert all(h.packet["src"] == "172.18.0.12" for h in behind)  # masqueraded by node-2
        assert tracetext.summary(behind)["verdict"] == "passed on, no rewrite here"
        # without the entry node's id, node-1's capture has no packet from the source port
        assert tracetext.marked(parse(f"{mode}-web-cluster-via-node-2-at-node-1"), sport) == []


def test_nothing_seen_and_garbage() -> None:
    assert tracetext.marked(tracetext.parse_xtables("no trace here\n"), 1) == []
    assert tracetext.marked(tracetext.parse_nft("trace id zz\n\n"), 1) == []
    assert tracetext.summary([]) == {"verdict": "not seen", "hooks": []}

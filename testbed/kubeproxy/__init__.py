"""Rules and servers that mirror what kube-proxy runs on a node."""

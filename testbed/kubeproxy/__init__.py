"""kube-proxy's own logic, pure: endpoint choice, rule rendering, deltas, health answers."""

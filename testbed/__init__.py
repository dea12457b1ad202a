"""kubeproxy-testbed: see how kube-proxy really handles Service traffic."""

__version__ = "0.1.0"

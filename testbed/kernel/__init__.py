"""What touches the kernel: namespaces, links, rule loading, captures, probes, servers."""

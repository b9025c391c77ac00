"""Tools around fastchat-gateway that are not part of it: the benchmark, the load generator, the demo and the
simulated FastChat worker (`python -m bench.simworker`)."""

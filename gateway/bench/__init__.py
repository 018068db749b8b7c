"""Benchmarks of the gateway against its simulators (``make bench``): timings to read, never to assert on."""

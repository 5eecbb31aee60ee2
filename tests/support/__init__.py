"""Test doubles shared by the tests and the benchmarks: a scripted teacher, fault-injecting callbacks."""

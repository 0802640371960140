"""Reliability tooling: the store consistency checker that races, fault runs and the soak end with."""

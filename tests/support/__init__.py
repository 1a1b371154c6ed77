"""Helpers for the HTTP contract suite and the API benchmarks.

Everything here talks to a server over HTTP only (httpx), so the same code
drives ``whisperop serve`` on loopback and, later, the cluster facade.
"""

"""Trusting rules before they go live: test cases, explain, and the diff of a request."""

"""Transport: the HTTP sender and the network guard in front of it."""

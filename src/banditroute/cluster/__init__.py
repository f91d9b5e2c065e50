"""Replicas on several machines working together through one Valkey/Redis server.

``[cluster] url`` (or ``serve --cluster URL``) turns it on; without it nothing here is
imported and a server behaves as a lone one. :mod:`~banditroute.cluster.connection` holds the
client with bounded timeouts and the degraded circuit every other part goes through.
"""

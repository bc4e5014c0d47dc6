"""Transports: gRPC (servicer, interceptors) and HTTP (http/) translate requests into calls on
raysft.service.operations and results into messages; nothing here decides about jobs.

Rule: api imports operations and jobs, never the reverse; messages, specproto and speclimits are the one
translation between protos and the domain.
"""

"""The job domain and its store: lifecycle states, the SQL store, what events do to a job, admission and
quotas, tenants and roles, path confinement, operator limits, webhooks, leader election.

Rule: nothing here imports grpc, Ray or another part of raysft.service; errors are ServiceErrors the
transports map to status codes.
"""

"""The job domain and its store: lifecycle states, the SQL store, what events do to a job, admission and
quotas, tenants and roles, path confinement, operator limits, webhooks, leader election.

Rule: nothing here imports grpc or another part of raysft.service, nor Ray but for counting a tune spec's
trials (raysft.tune.space, on tune specs only); errors are ServiceErrors the transports map to status codes.
"""

"""The Ray adapter: submitting and following Ray Jobs (runner), the supervisor that turns what Ray and the job
logs say into store transitions, and failure classification (failures).

Rule: the service's only door to Ray (the embedded cluster it may start is raysft.local_ray.cluster); it imports
jobs, never api.
"""

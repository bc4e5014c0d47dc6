"""The Ray adapter: submitting and following Ray Jobs (runner), the embedded local cluster (cluster), the
supervisor that turns what Ray and the job logs say into store transitions, and failure classification.

Rule: only this package (and raysft.train) talks to Ray; it imports jobs, never api.
"""

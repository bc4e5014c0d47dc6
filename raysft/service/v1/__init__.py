"""Version 1 of the job service API: jobs.proto and the code generated from it by scripts/gen_proto.sh (never edited by hand)."""

__all__: list[str] = []

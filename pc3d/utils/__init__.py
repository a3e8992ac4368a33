"""Small helpers below every other pc3d package: seeding mixes and progress reporting.

Nothing here imports another pc3d package, so data, sim, eval and engine can all use it.
"""
